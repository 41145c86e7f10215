// Peers for relay tests: FFmpeg producing real H.264 RTP, and werift WHEP
// viewers that count what arrives. Loopback only.

import dgram from "node:dgram";
import { RTCPeerConnection } from "werift";
import { superviseSpawn } from "../../runtime/infra/child-process.ts";
import { h264NalTypes, h264PeerConfig, keepLoopbackCandidates, startsKeyFrame } from "../../media/index.ts";
import type { RegisterCleanup } from "./nats-harness.ts";

const HOST = "127.0.0.1";

export interface FfmpegRtp {
  onPacket(fn: (packet: Buffer) => void): void;
  readonly packets: number;
  stop(): Promise<void>;
}

/** FFmpeg encoding a test pattern in real time to H.264 RTP (payload type 96) on a UDP socket of this process. */
export async function startFfmpegRtp(opts: { onCleanup: RegisterCleanup; size?: string; fps?: number; gop?: number; bitrateK?: number }): Promise<FfmpegRtp> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, HOST, () => resolve());
  });
  const listeners: ((p: Buffer) => void)[] = [];
  let packets = 0;
  socket.on("message", (msg) => {
    packets++;
    for (const fn of listeners) fn(msg);
  });
  let stopped = false;
  let child: Awaited<ReturnType<typeof superviseSpawn>> | undefined;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await child?.terminate(5_000);
    socket.close();
  };
  opts.onCleanup(stop);
  const fps = opts.fps ?? 15;
  const rate = opts.bitrateK !== undefined ? ["-b:v", `${opts.bitrateK}k`, "-maxrate", `${opts.bitrateK}k`, "-bufsize", `${opts.bitrateK}k`] : [];
  // Baseline, one slice per frame, in-band SPS/PPS before every IDR (h264_mp4toannexb).
  child = await superviseSpawn("ffmpeg", [
    "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
    "-f", "lavfi", "-i", `testsrc=size=${opts.size ?? "320x240"}:rate=${fps}`,
    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency", "-preset", "ultrafast",
    "-g", String(opts.gop ?? fps * 2), ...rate,
    "-bsf:v", "h264_mp4toannexb", "-f", "rtp", "-payload_type", "96", `rtp://${HOST}:${socket.address().port}?pkt_size=1200`,
  ]);
  return {
    onPacket: (fn) => listeners.push(fn),
    get packets() {
      return packets;
    },
    stop,
  };
}

export interface WheqResult {
  status: number;
  location?: string;
  /** The URL that answered, after redirects. */
  answeredBy: string;
  body: string;
}

export interface WhepViewer {
  /** HTTP outcome of the POST. */
  readonly response: WheqResult;
  /** performance.now() when the answer arrived. */
  readonly answeredAt: number;
  /** `connectedAt`: performance.now() when ICE and DTLS were up on this side (the relay starts sending from then). */
  readonly received: { packets: number; keyFrames: number; connectedAt?: number; firstPacketAt?: number; firstKeyFrameAt?: number; firstNalTypes?: number[] };
  readonly pc: RTCPeerConnection;
  /** DELETE on the Location; resolves with the status. */
  remove(): Promise<number>;
  close(): Promise<void>;
}

/** A werift WHEP viewer (recvonly H.264) of `url`; throws if the POST is not answered with 201. */
export async function whepViewer(url: string, opts: { onCleanup: RegisterCleanup; token?: string }): Promise<WhepViewer> {
  const pc = new RTCPeerConnection(h264PeerConfig({ loopbackOnly: true }));
  opts.onCleanup(() => pc.close());
  pc.addTransceiver("video", { direction: "recvonly" });
  const received: WhepViewer["received"] = { packets: 0, keyFrames: 0 };
  pc.connectionStateChange.subscribe((state) => {
    if (state === "connected") received.connectedAt ??= performance.now();
  });
  pc.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((rtp) => {
      received.packets++;
      received.firstPacketAt ??= performance.now();
      received.firstNalTypes ??= h264NalTypes(rtp.payload);
      if (startsKeyFrame(rtp.payload)) {
        received.keyFrames++;
        received.firstKeyFrameAt ??= performance.now();
      }
    });
  });
  await pc.setLocalDescription(await pc.createOffer());
  const auth: Record<string, string> = opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {};
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/sdp", ...auth }, body: keepLoopbackCandidates(pc.localDescription!.sdp) });
  const body = await res.text();
  const location = res.headers.get("location") ?? undefined;
  const response: WheqResult = { status: res.status, answeredBy: res.url, body, ...(location !== undefined ? { location } : {}) };
  if (res.status !== 201) {
    await pc.close();
    throw Object.assign(new Error(`WHEP POST ${url} answered ${res.status}: ${body}`), { response });
  }
  const answeredAt = performance.now();
  await pc.setRemoteDescription({ type: "answer", sdp: keepLoopbackCandidates(body) });
  return {
    response,
    answeredAt,
    received,
    pc,
    remove: async () => {
      const r = await fetch(new URL(location!, res.url), { method: "DELETE", headers: auth });
      await r.body?.cancel();
      return r.status;
    },
    close: () => pc.close(),
  };
}

/** A real offer from werift: recvonly (a WHEP viewer's) or sendonly (a WHIP publisher's), loopback candidates only. */
export async function weriftOffer(direction: "recvonly" | "sendonly"): Promise<{ sdp: string; close(): Promise<void> }> {
  const pc = new RTCPeerConnection(h264PeerConfig({ loopbackOnly: true }));
  pc.addTransceiver("video", { direction });
  await pc.setLocalDescription(await pc.createOffer());
  return { sdp: keepLoopbackCandidates(pc.localDescription!.sdp), close: () => pc.close() };
}
