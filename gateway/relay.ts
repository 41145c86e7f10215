import { randomUUID } from "node:crypto";
import { MediaStreamTrack, RTCPeerConnection, type RTCRtpTransceiver, type RtpPacket } from "werift";
import { checkOffer, GopCache, h264PeerConfig, keepLoopbackCandidates, openSrtpSender, type SrtpSender } from "../media/index.ts";
import type { Logger } from "../runtime/index.ts";
import { CamfleetError } from "../subjects/index.ts";

/**
 * The media relay: for each camera one WHIP publisher (werift, recvonly) and
 * any number of WHEP viewers (werift, sendonly). RTP from the publisher is
 * forwarded to every live viewer as it arrives: no decoding, no re-encoding,
 * no jitter buffer. Each packet is serialized once; per viewer, the lean SRTP
 * path (media/srtp-sender.ts) rewrites SSRC and payload type, encrypts and
 * sends it: that is the per-viewer cost. A viewer whose session that path does
 * not handle (negotiated header extensions, another SRTP profile) goes
 * through werift's `sender.sendRtp` instead, ~3× the CPU.
 *
 * A picture at once: the relay keeps the RTP of the current GOP, from the
 * last IDR on (with the SPS/PPS sent just before it, same timestamp). A viewer that comes
 * up gets that GOP replayed, then the live packets, so its decoder starts
 * at once instead of at the source's next IDR. Copied H.264 cannot make a
 * key frame on request, so a viewer's PLI is passed to the publisher (rate
 * limited), which may or may not honour it (the camera's publisher only
 * logs it). NACK: each viewer's sender keeps its last 128 packets
 * and retransmits what the viewer reports lost; towards the publisher,
 * werift's receiver NACKs what goes missing on the way in.
 *
 * A viewer whose peer vanishes is found by whichever comes first: ICE or
 * DTLS failing or closing (werift 0.25 surfaces a DTLS close_notify only
 * as the DTLS transport's state, not as a connection state), or no RTCP at
 * all from it for `rtcpTimeoutMs` (browsers and werift send receiver
 * reports every 0.5–1.5 s; ICE alone would take ~30 s).
 */

export interface RelayOptions {
  logger: Logger;
  /** Keep only 127.0.0.1 candidates (tests, single host). Default false. */
  loopbackOnly?: boolean;
  /** WHEP viewers of one camera at most. */
  maxViewersPerCamera: number;
  /** WHEP viewers at most, all cameras together. */
  maxViewers: number;
  /** No RTCP from a connected peer for this long ends its session, ms. Default 5000. */
  rtcpTimeoutMs?: number;
  /** A session not connected (ICE + DTLS) this long after its answer ends, ms. Default 15000. */
  connectTimeoutMs?: number;
  /** A connected publisher that sends no RTP for this long ends, ms. Default 10000. */
  publisherIdleTimeoutMs?: number;
  /** Cached GOP larger than this is dropped (a source with very long GOPs), bytes. Default 8 MiB. */
  maxGopBytes?: number;
  /** Called whenever a camera's publisher or viewer count changes. */
  onChange?: (camera: string) => void;
  /**
   * Called for each packet forwarded to at least one viewer, with the time
   * from its arrival at the relay to the last viewer's copy handed to the
   * socket, ms: the relay's own added latency.
   */
  onForwarded?: (ms: number) => void;
}

export type SessionKind = "whip" | "whep";

export interface SessionAnswer {
  sessionId: string;
  answer: string;
}

export interface CameraRelayStats {
  camera_id: string;
  publishing: boolean;
  viewers: number;
  viewers_live: number;
  /** Connected viewers served by the lean SRTP path (the rest by werift's sender). */
  viewers_lean: number;
  publisher?: { session: string; connected: boolean; uptime_s: number; packets_in: number; bytes_in: number; key_frames: number };
  gop_packets: number;
  plis_forwarded: number;
}

const DEFAULT_RTCP_TIMEOUT_MS = 5_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 15_000;
const DEFAULT_PUBLISHER_IDLE_MS = 10_000;
const DEFAULT_MAX_GOP_BYTES = 8 * 1024 * 1024;
/** PLIs sent to one publisher at most this often, ms: a room of viewers asking at once is one request. */
const PLI_MIN_INTERVAL_MS = 500;
const SWEEP_INTERVAL_MS = 500;
/** A new viewer's cached GOP goes out this many packets at a time, with this pause between: ~8k packets/s. */
const REPLAY_CHUNK = 32;
const REPLAY_PAUSE_MS = 4;

type Ended = "deleted" | "failed" | "closed" | "timeout" | "replaced" | "shutdown";

abstract class Session {
  readonly id = randomUUID();
  readonly pc: RTCPeerConnection;
  readonly createdAt = performance.now();
  connectedAt?: number;
  lastRtcpAt = performance.now();
  ended?: Ended;

  constructor(
    readonly camera: CameraRelay,
    readonly kind: SessionKind,
    loopbackOnly: boolean,
  ) {
    this.pc = new RTCPeerConnection(h264PeerConfig({ loopbackOnly }));
  }

  /** Watches ICE, DTLS and RTCP; `end` is called once, whichever says the peer is gone first. */
  watch(end: (why: Ended) => void): void {
    this.pc.connectionStateChange.subscribe((state) => {
      if (state === "connected") {
        if (this.connectedAt === undefined) {
          this.connectedAt = performance.now();
          this.lastRtcpAt = this.connectedAt;
          this.onConnected();
        }
      } else if (state === "failed") end("failed");
      else if (state === "closed") end("closed");
    });
    for (const dtls of this.pc.dtlsTransports) {
      dtls.onStateChange.subscribe((state) => {
        if (state === "closed") end("closed");
        else if (state === "failed") end("failed");
      });
      dtls.onRtcp.subscribe(() => {
        this.lastRtcpAt = performance.now();
      });
    }
  }

  abstract onConnected(): void;
}

class Publisher extends Session {
  transceiver?: RTCRtpTransceiver;
  remoteSsrc?: number;
  packetsIn = 0;
  bytesIn = 0;
  keyFrames = 0;
  lastRtpAt = performance.now();
  lastPliAt = -Infinity;
  onConnected(): void {
    this.camera.publisherConnected(this);
  }
}

class Viewer extends Session {
  readonly track = new MediaStreamTrack({ kind: "video" });
  transceiver!: RTCRtpTransceiver;
  /**
   * connecting: no DTLS yet; waiting: connected, waiting for a key frame;
   * replaying: getting the cached GOP (live packets queue behind it); live: forwarding.
   */
  state: "connecting" | "waiting" | "replaying" | "live" = "connecting";
  /** What a replaying viewer still has to get, oldest first. */
  replay: Buffer[] = [];
  packetsOut = 0;
  firstPacketAt?: number;
  /** The lean SRTP path once DTLS is up; undefined: werift's sender.sendRtp. */
  lean?: SrtpSender;
  onConnected(): void {
    this.lean = openSrtpSender(this.transceiver.sender, this.pc.localDescription?.sdp ?? "");
    this.state = "waiting";
    this.camera.viewerConnected(this);
  }

  /** Hands one serialized RTP packet to this viewer; a promise only on werift's path (settles once sent). */
  send(packet: Buffer): Promise<void> | undefined {
    this.packetsOut++;
    this.firstPacketAt ??= performance.now();
    if (this.lean !== undefined) {
      this.lean.send(packet);
      return undefined;
    }
    // werift parses the bytes into a packet of its own before rewriting SSRC/PT, so one buffer serves every viewer.
    return this.transceiver.sender.sendRtp(packet).catch(() => {});
  }
}

/** One camera's publisher, viewers and cached GOP. */
class CameraRelay {
  publisher?: Publisher;
  /**
   * A publisher accepted while another one is on the air: it replaces that
   * one only once it is connected, so a publisher that never connects (or an
   * offer from a peer that goes away) cannot take a live camera off the air.
   */
  pendingPublisher?: Publisher;
  readonly viewers = new Set<Viewer>();
  /** WHEP offers being negotiated: they hold a viewer slot, so concurrent offers cannot pass the limits. */
  negotiating = 0;
  /** RTP of the current GOP (serialized), from the last key frame's parameter sets on. */
  readonly gop: GopCache;
  plisForwarded = 0;

  constructor(
    readonly id: string,
    private readonly relay: Relay,
  ) {
    this.gop = new GopCache(relay.maxGopBytes);
  }

  leanViewers(): number {
    let n = 0;
    for (const v of this.viewers) if (v.lean !== undefined) n++;
    return n;
  }

  liveViewers(): number {
    let n = 0;
    for (const v of this.viewers) if (v.state === "live" || v.state === "replaying") n++;
    return n;
  }

  onRtp(publisher: Publisher, rtp: RtpPacket): void {
    if (publisher !== this.publisher) return;
    publisher.packetsIn++;
    publisher.bytesIn += rtp.payload.length;
    publisher.lastRtpAt = performance.now();
    // Once, whatever the number of viewers: each viewer's sender rewrites a copy of the header.
    const packet = rtp.serialize();
    const gopStarts = this.gop.push(packet);
    if (gopStarts) publisher.keyFrames++;
    let forwarded = false;
    const pending: Promise<void>[] = [];
    const send = (viewer: Viewer, p: Buffer) => {
      forwarded = true;
      const sent = viewer.send(p);
      if (sent !== undefined) pending.push(sent);
    };
    for (const viewer of this.viewers) {
      if (viewer.state === "live") send(viewer, packet);
      else if (viewer.state === "replaying") viewer.replay.push(packet);
      else if (viewer.state === "waiting" && gopStarts) {
        // Its first packets: the parameter sets of this IDR, then the IDR itself (all in the cache now).
        viewer.state = "live";
        for (const p of this.gop.packets()) send(viewer, p);
      }
    }
    if (forwarded) this.relay.timeForward(publisher.lastRtpAt, pending);
  }

  /** A viewer's DTLS is up: replay the cached GOP, or wait for the next key frame and ask for one. */
  viewerConnected(viewer: Viewer): void {
    if (this.gop.size > 0) {
      viewer.state = "replaying";
      viewer.replay = [...this.gop.packets()];
      this.#pump(viewer);
    } else {
      this.requestKeyFrame();
    }
    this.relay.changed(this.id);
  }

  /**
   * Sends a replaying viewer its next REPLAY_CHUNK packets, then yields for
   * REPLAY_PAUSE_MS: a GOP (hundreds of packets at a few Mbit/s) at once would
   * overflow the viewer's socket buffer (and werift retransmits only its last
   * 128 packets), and would hold up every other viewer for as long.
   */
  #pump(viewer: Viewer): void {
    if (viewer.state !== "replaying" || viewer.ended !== undefined) return;
    for (const packet of viewer.replay.splice(0, REPLAY_CHUNK)) void viewer.send(packet);
    if (viewer.replay.length === 0) viewer.state = "live";
    else setTimeout(() => this.#pump(viewer), REPLAY_PAUSE_MS);
  }

  /** Asks the publisher for a key frame (PLI), at most every PLI_MIN_INTERVAL_MS. */
  requestKeyFrame(): void {
    const p = this.publisher;
    if (p === undefined || p.remoteSsrc === undefined || p.transceiver === undefined) return;
    const now = performance.now();
    if (now - p.lastPliAt < PLI_MIN_INTERVAL_MS) return;
    p.lastPliAt = now;
    this.plisForwarded++;
    p.transceiver.receiver.sendRtcpPLI(p.remoteSsrc).catch(() => {});
  }

  /** A publisher's ICE and DTLS are up: a pending one takes over now. */
  publisherConnected(publisher: Publisher): void {
    if (publisher !== this.pendingPublisher) return;
    this.pendingPublisher = undefined;
    const old = this.publisher;
    this.setPublisher(publisher);
    if (old !== undefined) this.relay.replaced(old);
    this.relay.changed(this.id);
  }

  /** A new publisher replaces the old one: viewers stay, their streams continue without a jump. */
  setPublisher(publisher: Publisher | undefined): void {
    this.publisher = publisher;
    this.gop.clear();
    for (const v of this.viewers) {
      if (v.state === "live" || v.state === "replaying") {
        v.state = "waiting";
        v.replay = [];
        // The new source's sequence numbers and timestamps go on from the old ones: the lean path
        // rebases a new SSRC by itself; werift's path needs to be told.
        if (v.lean === undefined) v.transceiver.sender.replaceRTP({ sequenceNumber: 0, timestamp: 0 }, true);
      }
    }
  }

  empty(): boolean {
    return this.publisher === undefined && this.pendingPublisher === undefined && this.viewers.size === 0 && this.negotiating === 0;
  }

  /** Viewers whose ICE and DTLS are up: the ones that count for an on-demand camera's publishing. */
  connectedViewers(): number {
    let n = 0;
    for (const v of this.viewers) if (v.connectedAt !== undefined) n++;
    return n;
  }

  stats(): CameraRelayStats {
    const p = this.publisher;
    return {
      camera_id: this.id,
      publishing: p !== undefined && p.connectedAt !== undefined,
      viewers: this.viewers.size,
      viewers_live: this.liveViewers(),
      viewers_lean: this.leanViewers(),
      ...(p !== undefined
        ? {
            publisher: {
              session: p.id,
              connected: p.connectedAt !== undefined,
              uptime_s: p.connectedAt === undefined ? 0 : Math.round((performance.now() - p.connectedAt) / 100) / 10,
              packets_in: p.packetsIn,
              bytes_in: p.bytesIn,
              key_frames: p.keyFrames,
            },
          }
        : {}),
      gop_packets: this.gop.size,
      plis_forwarded: this.plisForwarded,
    };
  }
}

export class Relay {
  readonly #cameras = new Map<string, CameraRelay>();
  readonly #sessions = new Map<string, Session>();
  readonly #log: Logger;
  readonly #sweep: NodeJS.Timeout;
  /** Each camera's cached GOP is dropped past this size (until its next key frame), bytes. */
  readonly maxGopBytes: number;
  #closed = false;

  constructor(private readonly options: RelayOptions) {
    this.#log = options.logger.child({ component: "relay" });
    this.maxGopBytes = options.maxGopBytes ?? DEFAULT_MAX_GOP_BYTES;
    this.#sweep = setInterval(() => this.#sweepSessions(), SWEEP_INTERVAL_MS);
  }

  #camera(id: string): CameraRelay {
    let c = this.#cameras.get(id);
    if (c === undefined) {
      c = new CameraRelay(id, this);
      this.#cameras.set(id, c);
    }
    return c;
  }

  /** `pending`: the sends still in flight on werift's path; the lean path's are with the socket already. */
  timeForward(arrivedAt: number, pending: Promise<void>[]): void {
    const report = this.options.onForwarded;
    if (report === undefined) return;
    if (pending.length === 0) report(performance.now() - arrivedAt);
    else void Promise.all(pending).then(() => report(performance.now() - arrivedAt));
  }

  changed(camera: string): void {
    try {
      this.options.onChange?.(camera);
    } catch (err) {
      this.#log.error({ err, camera }, "relay change listener threw");
    }
  }

  /** The old publisher of a camera whose new one is connected: ended. */
  replaced(old: Publisher): void {
    void this.#end(old, "replaced");
  }

  /**
   * WHIP: a camera (or any publisher the gateway let through) sends H.264.
   * With no connected publisher it is on the air at once; otherwise it
   * replaces the one there once it is connected itself.
   */
  async publish(camera: string, offer: string): Promise<SessionAnswer> {
    this.#assertOpen();
    checkOffer(offer, "send");
    const cam = this.#camera(camera);
    const pub = new Publisher(cam, "whip", this.options.loopbackOnly ?? false);
    const ingest = pub.pc.addTransceiver("video", { direction: "recvonly" });
    pub.transceiver = ingest;
    pub.pc.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe((rtp) => {
        pub.remoteSsrc ??= rtp.header.ssrc;
        cam.onRtp(pub, rtp);
      });
    });
    let answer: string;
    try {
      answer = await this.#negotiate(pub, offer, ingest, "recvonly");
    } catch (err) {
      if (cam.empty() && this.#cameras.get(camera) === cam) this.#cameras.delete(camera);
      throw err;
    }
    const old = cam.publisher;
    this.#sessions.set(pub.id, pub);
    const onAir = old !== undefined && old.connectedAt !== undefined && old.ended === undefined;
    if (onAir) {
      // Waits for its own connection; an earlier pending one is superseded.
      const earlier = cam.pendingPublisher;
      cam.pendingPublisher = pub;
      if (earlier !== undefined) void this.#end(earlier, "replaced");
    } else {
      cam.setPublisher(pub);
      if (old !== undefined) void this.#end(old, "replaced");
    }
    pub.watch((why) => void this.#end(pub, why));
    this.#log.info({ camera, session: pub.id, replaces: onAir ? "once connected" : old !== undefined ? "at once" : "none" }, "WHIP publisher accepted");
    this.changed(camera);
    return { sessionId: pub.id, answer };
  }

  /** WHEP: a viewer receives the camera's H.264; waits for the publisher if there is none yet. */
  async view(camera: string, offer: string): Promise<SessionAnswer> {
    this.#assertOpen();
    checkOffer(offer, "receive");
    const cam = this.#cameras.get(camera);
    // Offers still negotiating count: checked and reserved in one step, so concurrent offers cannot pass the limits.
    if ((cam?.viewers.size ?? 0) + (cam?.negotiating ?? 0) >= this.options.maxViewersPerCamera) {
      throw new CamfleetError("CAPACITY", `camera ${camera} has ${this.options.maxViewersPerCamera} viewers on this gateway, the most it serves (RELAY_MAX_VIEWERS_PER_CAMERA)`);
    }
    if (this.totalViewers() >= this.options.maxViewers) {
      throw new CamfleetError("CAPACITY", `this gateway serves ${this.options.maxViewers} viewers, the most it may (RELAY_MAX_VIEWERS)`);
    }
    const c = this.#camera(camera);
    c.negotiating++;
    const viewer = new Viewer(c, "whep", this.options.loopbackOnly ?? false);
    viewer.transceiver = viewer.pc.addTransceiver(viewer.track, { direction: "sendonly" });
    viewer.transceiver.sender.onPictureLossIndication.subscribe(() => c.requestKeyFrame());
    let answer: string;
    try {
      answer = await this.#negotiate(viewer, offer, viewer.transceiver, "sendonly");
    } catch (err) {
      c.negotiating--;
      if (c.empty() && this.#cameras.get(camera) === c) this.#cameras.delete(camera);
      throw err;
    }
    c.negotiating--;
    c.viewers.add(viewer);
    this.#sessions.set(viewer.id, viewer);
    viewer.watch((why) => void this.#end(viewer, why));
    this.#log.info({ camera, session: viewer.id, viewers: c.viewers.size, publishing: c.publisher !== undefined }, "WHEP viewer accepted");
    this.changed(camera);
    return { sessionId: viewer.id, answer };
  }

  async #negotiate(session: Session, offer: string, transceiver: RTCRtpTransceiver, want: "recvonly" | "sendonly"): Promise<string> {
    const loopback = this.options.loopbackOnly ?? false;
    try {
      try {
        await session.pc.setRemoteDescription({ type: "offer", sdp: loopback ? keepLoopbackCandidates(offer) : offer });
      } catch (err) {
        throw new CamfleetError("INVALID_ARGUMENT", `the SDP offer was refused: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      const codec = transceiver.codecs.find((c) => /^video\/H264$/i.test(c.mimeType));
      if (codec === undefined) throw new CamfleetError("UNSUPPORTED_MEDIA", "no H.264 profile of the offer is one this relay can accept (packetization-mode=1 needed)");
      await session.pc.setLocalDescription(await session.pc.createAnswer());
      const dir = transceiver.currentDirection;
      if (dir !== want && dir !== "sendrecv") throw new CamfleetError("UNSUPPORTED_MEDIA", `the offer's video section cannot be answered ${want} (got ${dir ?? "none"})`);
      const local = session.pc.localDescription;
      if (!local) throw new CamfleetError("INTERNAL", "werift produced no answer");
      return loopback ? keepLoopbackCandidates(local.sdp) : local.sdp;
    } catch (err) {
      await session.pc.close().catch(() => {});
      throw err;
    }
  }

  /** Ends a session by its id (DELETE on its Location); false if there is none of that kind for that camera. */
  async end(camera: string, kind: SessionKind, sessionId: string): Promise<boolean> {
    const s = this.#sessions.get(sessionId);
    if (s === undefined || s.kind !== kind || s.camera.id !== camera) return false;
    await this.#end(s, "deleted");
    return true;
  }

  async #end(s: Session, why: Ended): Promise<void> {
    if (s.ended !== undefined) return;
    s.ended = why;
    this.#sessions.delete(s.id);
    const cam = s.camera;
    if (s instanceof Viewer) {
      cam.viewers.delete(s);
      s.track.stop();
      s.lean?.close();
    } else if (s instanceof Publisher && cam.publisher === s) {
      cam.setPublisher(undefined);
    } else if (s instanceof Publisher && cam.pendingPublisher === s) {
      cam.pendingPublisher = undefined;
    }
    if (cam.empty() && this.#cameras.get(cam.id) === cam) this.#cameras.delete(cam.id);
    const level = why === "deleted" || why === "replaced" || why === "shutdown" ? "info" : "warn";
    const sent = s instanceof Viewer ? { packets_out: s.packetsOut, rtp_path: s.lean !== undefined ? "lean" : "werift", ...(s.lean ? { lean: s.lean.stats() } : {}) } : {};
    this.#log[level]({ camera: cam.id, session: s.id, kind: s.kind, reason: why, ...sent }, `${s.kind === "whip" ? "WHIP publisher" : "WHEP viewer"} session ended`);
    this.changed(cam.id);
    await s.pc.close().catch(() => {});
  }

  #sweepSessions(): void {
    const now = performance.now();
    const rtcpTimeout = this.options.rtcpTimeoutMs ?? DEFAULT_RTCP_TIMEOUT_MS;
    const connectTimeout = this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const idle = this.options.publisherIdleTimeoutMs ?? DEFAULT_PUBLISHER_IDLE_MS;
    for (const s of this.#sessions.values()) {
      if (s.connectedAt === undefined) {
        if (now - s.createdAt > connectTimeout) void this.#end(s, "timeout");
      } else if (now - s.lastRtcpAt > rtcpTimeout) {
        void this.#end(s, "timeout");
      } else if (s instanceof Publisher && now - s.lastRtpAt > idle && now - s.connectedAt > idle) {
        void this.#end(s, "timeout");
      }
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new CamfleetError("UNAVAILABLE", "the relay is shutting down");
  }

  /** Viewers of one camera on this relay (waiting ones included). */
  viewerCount(camera: string): number {
    return this.#cameras.get(camera)?.viewers.size ?? 0;
  }

  /** Viewers of one camera whose ICE and DTLS are up: what the owner is told, so a viewer that never connects keeps nothing publishing. */
  connectedViewerCount(camera: string): number {
    return this.#cameras.get(camera)?.connectedViewers() ?? 0;
  }

  /** Viewers on this relay, offers being negotiated included (what the limits count). */
  totalViewers(): number {
    let n = 0;
    for (const c of this.#cameras.values()) n += c.viewers.size + c.negotiating;
    return n;
  }

  /** A publisher session exists for the camera (connected or not, pending ones included). */
  hasPublisher(camera: string): boolean {
    const c = this.#cameras.get(camera);
    return c?.publisher !== undefined || c?.pendingPublisher !== undefined;
  }

  /** A publisher of the camera is connected and on the air here. */
  isLive(camera: string): boolean {
    const p = this.#cameras.get(camera)?.publisher;
    return p !== undefined && p.connectedAt !== undefined && p.ended === undefined;
  }

  /** Cameras with a publisher or viewers here. */
  cameras(): string[] {
    return [...this.#cameras.keys()];
  }

  stats(camera?: string): CameraRelayStats[] {
    const list = camera === undefined ? [...this.#cameras.values()] : [this.#cameras.get(camera)].filter((c) => c !== undefined);
    return list.map((c) => c.stats());
  }

  /** Ends every session. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweep);
    await Promise.all([...this.#sessions.values()].map((s) => this.#end(s, "shutdown")));
  }
}
