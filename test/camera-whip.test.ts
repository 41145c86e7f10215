// The WHIP publisher (media/whip-client.ts) against real peers on 127.0.0.1:
// a minimal WHIP server in this file answering with werift, the same server
// failing in each way a server can, and Debian's Chromium as the answering
// peer (driven by playwright-core), fed with real RTP from a real FFmpeg.

import dgram from "node:dgram";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { describe, expect, it, onTestFinished } from "vitest";
import { RTCPeerConnection, useH264 } from "werift";
import type { StartWhip } from "../actors/camera/camera-actor.ts";
import { h264NalTypes, keepLoopbackCandidates, startWhip, type WhipOptions, type WhipSession } from "../media/index.ts";
import { superviseSpawn, type SupervisedChild } from "../runtime/infra/child-process.ts";
import { createLogger } from "../runtime/index.ts";
import { hasChromium, launchChromium, processesMarked, type PeerPage } from "./helpers/chromium.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";

const HOST = "127.0.0.1";

// The camera actor takes the publisher as an injected function; this one must fit.
startWhip satisfies StartWhip;

// ---------------------------------------------------------------------------
// A minimal WHIP server (RFC 9725): POST /whip/:id → 201 + Location + answer;
// DELETE on the Location → 200.

interface SeenRequest {
  method: string;
  path: string;
  contentType?: string;
  authorization?: string;
  /** performance.now() when the request had arrived in full. */
  at: number;
  /** performance.now() when the response was sent; POSTs only. */
  answeredAt?: number;
}

interface WhipServerOptions {
  /** Produces the SDP answer to an offer. Default: none (pair it with `reply`). */
  answer?: (offer: string) => Promise<string>;
  /** Required bearer token; a missing or wrong one gets 401. */
  token?: string;
  /** Reply to POST with this instead of answering. `location: false` leaves the header out. */
  reply?: { status: number; body?: string; location?: boolean };
  /** Never reply to POST. */
  hang?: boolean;
}

interface WhipServer {
  readonly origin: string;
  url(camera: string): string;
  readonly requests: SeenRequest[];
  close(): Promise<void>;
}

async function startWhipServer(opts: WhipServerOptions, onCleanup: (fn: () => Promise<void>) => void): Promise<WhipServer> {
  const requests: SeenRequest[] = [];
  let sessions = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const seen: SeenRequest = {
      method: req.method ?? "",
      path: req.url ?? "",
      ...(req.headers["content-type"] !== undefined ? { contentType: req.headers["content-type"] } : {}),
      ...(req.headers.authorization !== undefined ? { authorization: req.headers.authorization } : {}),
      at: performance.now(),
    };
    requests.push(seen);
    const path = new URL(seen.path, `http://${HOST}`).pathname;
    if (req.method === "GET" && path === "/") {
      // A page on an http://127.0.0.1 origin: a secure context, so getUserMedia exists there.
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>whep viewer</title><body></body>");
      return;
    }
    if (opts.token !== undefined && req.headers.authorization !== `Bearer ${opts.token}`) {
      res.writeHead(401, { "content-type": "text/plain" }).end("bad token");
      return;
    }
    const post = /^\/whip\/([A-Za-z0-9_-]+)$/.exec(path);
    if (req.method === "POST" && post) {
      if (opts.hang) return;
      if (req.headers["content-type"] !== "application/sdp") {
        res.writeHead(415).end();
        return;
      }
      const location = `/whip/${post[1]}/session/${++sessions}`;
      if (opts.reply) {
        const headers: Record<string, string> = { "content-type": "text/plain" };
        if (opts.reply.location !== false) headers.location = location;
        res.writeHead(opts.reply.status, headers).end(opts.reply.body ?? "");
      } else if (opts.answer) {
        const answer = await opts.answer(body);
        res.writeHead(201, { "content-type": "application/sdp", location }).end(answer);
      } else {
        res.writeHead(500).end("no answerer");
      }
      seen.answeredAt = performance.now();
      return;
    }
    if (req.method === "DELETE" && /^\/whip\/[A-Za-z0-9_-]+\/session\/\d+$/.test(path)) {
      res.writeHead(200).end();
      return;
    }
    res.writeHead(404).end();
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    });
  });
  const close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, HOST, resolve);
  });
  onCleanup(close);
  const origin = `http://${HOST}:${(server.address() as AddressInfo).port}`;
  return { origin, url: (camera) => `${origin}/whip/${camera}`, requests, close };
}

/** werift as the WHIP server's peer: recvonly, counts what arrives. */
function weriftAnswerer(onCleanup: (fn: () => Promise<void>) => void) {
  const peers: RTCPeerConnection[] = [];
  const received = { packets: 0, payloadTypes: new Set<number>(), nalTypes: new Set<number>() };
  onCleanup(async () => {
    await Promise.all(peers.map((pc) => pc.close()));
  });
  return {
    received,
    peers,
    async answer(offer: string): Promise<string> {
      const pc = new RTCPeerConnection({
        codecs: { video: [useH264()], audio: [] },
        iceServers: [],
        iceAdditionalHostAddresses: [HOST],
        iceFilterCandidatePair: (pair) => pair.localCandidate.host === HOST && pair.remoteCandidate.host === HOST,
      });
      peers.push(pc);
      pc.onTrack.subscribe((track) => {
        track.onReceiveRtp.subscribe((rtp) => {
          received.packets++;
          received.payloadTypes.add(rtp.header.payloadType);
          for (const t of h264NalTypes(rtp.payload)) received.nalTypes.add(t);
        });
      });
      await pc.setRemoteDescription({ type: "offer", sdp: offer });
      await pc.setLocalDescription(await pc.createAnswer());
      return keepLoopbackCandidates(pc.localDescription!.sdp);
    },
  };
}

// ---------------------------------------------------------------------------
// FFmpeg sending real H.264 RTP (payload type 96) to a UDP socket of this test.

interface FfmpegRtp {
  readonly pid: number;
  /** Every datagram that arrives, in order. */
  onPacket(fn: (packet: Buffer) => void): void;
  readonly packets: number;
  stderrTail(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it has exited and been reaped. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startFfmpegRtp(onCleanup: (fn: () => Promise<void>) => void): Promise<FfmpegRtp> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, HOST, () => resolve());
  });
  const port = socket.address().port;
  const listeners: ((p: Buffer) => void)[] = [];
  let packets = 0;
  socket.on("message", (msg) => {
    packets++;
    for (const fn of listeners) fn(msg);
  });
  let run: SupervisedChild | undefined;
  const stop = async () => {
    const result = run ? await run.terminate(5_000) : { code: null, signal: null };
    socket.close();
    return result;
  };
  // Registered before the spawn: a failed start or assert still ends the process.
  onCleanup(async () => {
    await stop().catch(() => {});
  });
  const args = [
    "-hide_banner", "-loglevel", "error", "-nostdin",
    // -re: produce frames in real time, as a camera does, not as fast as the encoder can.
    "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15",
    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency", "-preset", "ultrafast", "-g", "30",
    "-bsf:v", "h264_mp4toannexb", "-f", "rtp", "-payload_type", "96", `rtp://${HOST}:${port}?pkt_size=1200`,
  ];
  const c = (run = superviseSpawn("ffmpeg", args)).child;
  await new Promise<void>((resolve, reject) => {
    c.once("spawn", resolve);
    c.once("error", reject);
  });
  return {
    pid: c.pid!,
    onPacket: (fn) => listeners.push(fn),
    get packets() {
      return packets;
    },
    stderrTail: () => run!.stderrTail(),
    stop,
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------

function captureLogs() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter((l) => l !== ""));
      done();
    },
  });
  const logger = createLogger({ node: "test", level: "debug", destination });
  return { logger, lines, text: () => lines.join("\n") };
}

interface Outcome {
  up: number;
  failed: string[];
  upAt?: number;
  failedAt?: number;
}

/** startWhip with loopback-only candidates, a captured log, and its outcome recorded; stopped after the test. */
function publish(opts: Omit<WhipOptions, "onUp" | "onFailed">): { session: WhipSession; outcome: Outcome } {
  const outcome: Outcome = { up: 0, failed: [] };
  const session = startWhip({
    loopbackOnly: true,
    ...opts,
    onUp: () => {
      outcome.up++;
      outcome.upAt = performance.now();
    },
    onFailed: (detail) => {
      outcome.failed.push(detail);
      outcome.failedAt = performance.now();
    },
  });
  onTestFinished(() => session.stop());
  return { session, outcome };
}

describe("WHIP publisher against a werift WHIP server", () => {
  it("connects, delivers FFmpeg's RTP to the server's track, and stop() DELETEs the session", async ({ annotate }) => {
    const answerer = weriftAnswerer(onTestFinished);
    const server = await startWhipServer({ answer: (offer) => answerer.answer(offer) }, onTestFinished);
    const ffmpeg = await startFfmpegRtp(onTestFinished);
    const logs = captureLogs();

    const started = performance.now();
    const { session, outcome } = publish({ url: server.url("cam-1"), logger: logs.logger });
    ffmpeg.onPacket((p) => session.writeRtp(p));

    await waitFor(() => outcome.up === 1 || outcome.failed.length > 0, { timeoutMs: 10_000, message: "WHIP session up" });
    expect(outcome.failed).toEqual([]);
    const post = server.requests.find((r) => r.method === "POST")!;
    expect(post).toMatchObject({ path: "/whip/cam-1", contentType: "application/sdp" });
    expect(post.authorization).toBeUndefined();
    // The relative Location is resolved against the WHIP URL.
    expect(session.sessionUrl).toBe(`${server.origin}/whip/cam-1/session/1`);
    await waitFor(() => session.uptimeS() > 0, { message: "uptime counting" });

    await waitFor(() => answerer.received.packets >= 100 && answerer.received.nalTypes.has(5), {
      timeoutMs: 15_000,
      message: `RTP with an IDR at the server (ffmpeg sent ${ffmpeg.packets}; stderr: ${ffmpeg.stderrTail()})`,
    });
    expect([...answerer.received.payloadTypes]).toEqual([96]);
    // SPS and PPS travel in-band in front of the IDR: a viewer can start there.
    expect([...answerer.received.nalTypes]).toEqual(expect.arrayContaining([1, 5, 7, 8]));

    // A key-frame request cannot be honoured by copied H.264: the publisher only logs it.
    const receiver = answerer.peers[0]!.getTransceivers()[0]!.receiver;
    await receiver.sendRtcpPLI(receiver.track!.ssrc!);
    await waitFor(() => logs.lines.some((l) => l.includes('"level":"debug"') && l.includes("PLI")), { message: "PLI logged at debug" });

    const answerMs = post.answeredAt! - post.at;
    const connectMs = outcome.upAt! - post.at;
    await annotate(
      `start→POST ${(post.at - started).toFixed(0)} ms (offer + ICE gathering), POST→201 ${answerMs.toFixed(0)} ms, POST→connected ${connectMs.toFixed(0)} ms`,
    );
    const up = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "WHIP session up");
    // werift negotiates AES-GCM first: the packets went through the lean path (media/srtp-sender.ts).
    expect(up).toMatchObject({ component: "whip", answer_ms: expect.any(Number), connect_ms: expect.any(Number), rtp_path: "AEAD_AES_128_GCM" });

    await session.stop();
    const deletes = server.requests.filter((r) => r.method === "DELETE");
    expect(deletes.map((r) => r.path)).toEqual(["/whip/cam-1/session/1"]);
    expect(session.uptimeS()).toBe(0);
    expect(answerer.peers.length).toBe(1);

    // Idempotent, and silent: no second DELETE, no callback after stop().
    await session.stop();
    session.writeRtp(Buffer.alloc(100));
    expect(server.requests.filter((r) => r.method === "DELETE")).toHaveLength(1);
    expect(outcome).toMatchObject({ up: 1, failed: [] });

    const exit = await ffmpeg.stop();
    expect(exit.code === 255 || exit.signal === "SIGTERM" || exit.code === 0).toBe(true);
    expect(isAlive(ffmpeg.pid)).toBe(false);
  });
});

describe("WHIP publisher failures", () => {
  it("a 500 from the server fails with the status, without the URL's secrets", async () => {
    const server = await startWhipServer({ reply: { status: 500, body: "relay exploded" } }, onTestFinished);
    const logs = captureLogs();
    const { session, outcome } = publish({ url: `${server.url("cam-2")}?token=tok-in-url-42`, logger: logs.logger });

    await waitFor(() => outcome.failed.length > 0, { message: "onFailed" });
    const [detail] = outcome.failed;
    expect(detail).toMatch(/answered 500\b/);
    expect(detail).toContain("relay exploded");
    expect(detail).toContain("token=***");
    expect(detail).not.toContain("tok-in-url-42");
    expect(logs.text()).not.toContain("tok-in-url-42");
    expect(outcome.up).toBe(0);
    expect(session.sessionUrl).toBeUndefined();
    await session.stop();
    // The server created no session (no 201), so there is nothing to DELETE.
    expect(server.requests.filter((r) => r.method === "DELETE")).toEqual([]);
    expect(outcome.failed).toHaveLength(1);
  });

  it("an unreachable server (closed port) fails quickly", async () => {
    // Free and below the ephemeral range: nothing binds it meanwhile, so the connect is refused.
    const url = `http://${HOST}:${await reservePort()}/whip/cam-3`;
    const started = performance.now();
    // "Quickly" is against the request timeout a lost connect would wait for (10 s here):
    // the bound leaves 4 s for ICE gathering and the refused connect on a loaded machine.
    const { outcome } = publish({ url, requestTimeoutMs: 10_000 });

    await waitFor(() => outcome.failed.length > 0, { timeoutMs: 6_000, message: "onFailed" });
    expect(outcome.failed[0]).toMatch(/ECONNREFUSED/);
    expect(outcome.failedAt! - started).toBeLessThan(4_000);
    expect(outcome.up).toBe(0);
  });

  it("a server that never answers fails at the POST deadline", async () => {
    const server = await startWhipServer({ hang: true }, onTestFinished);
    const { outcome } = publish({ url: server.url("cam-4"), requestTimeoutMs: 300 });

    await waitFor(() => outcome.failed.length > 0, { timeoutMs: 5_000, message: "onFailed" });
    expect(outcome.failed[0]).toContain("no answer within 300 ms");
    // From the POST's arrival (ICE gathering before it is not the deadline's):
    // at most 300 ms are left, plus up to 1.2 s of timer lateness on a loaded
    // machine; far from the 5 s default.
    const post = server.requests.find((r) => r.method === "POST")!;
    expect(outcome.failedAt! - post.at).toBeLessThan(1_500);
  });

  it("stop() during the POST ends quietly: no callback", async () => {
    const server = await startWhipServer({ hang: true }, onTestFinished);
    const { session, outcome } = publish({ url: server.url("cam-5") });
    await waitFor(() => server.requests.some((r) => r.method === "POST"), { message: "POST arrived" });
    const stopping = performance.now();
    await session.stop();
    // Not the 5 s request timeout: the POST is aborted and the peer closed, 2 s on a loaded machine.
    expect(performance.now() - stopping).toBeLessThan(2_000);
    expect(outcome).toMatchObject({ up: 0, failed: [] });
  });

  it("sends the bearer token on POST and DELETE; a wrong token gets 401 and fails without showing it", async () => {
    const answerer = weriftAnswerer(onTestFinished);
    const server = await startWhipServer({ token: "s3cret-token", answer: (o) => answerer.answer(o) }, onTestFinished);

    const good = publish({ url: server.url("cam-6"), token: "s3cret-token" });
    await waitFor(() => good.outcome.up === 1 || good.outcome.failed.length > 0, { timeoutMs: 10_000, message: "up with the token" });
    expect(good.outcome.failed).toEqual([]);
    await good.session.stop();
    const seen = server.requests.filter((r) => r.path.startsWith("/whip/cam-6"));
    expect(seen.map((r) => [r.method, r.authorization])).toEqual([
      ["POST", "Bearer s3cret-token"],
      ["DELETE", "Bearer s3cret-token"],
    ]);

    const logs = captureLogs();
    const bad = publish({ url: server.url("cam-7"), token: "tok-WRONG-7731", logger: logs.logger });
    await waitFor(() => bad.outcome.failed.length > 0, { message: "onFailed with a wrong token" });
    expect(bad.outcome.failed[0]).toMatch(/answered 401\b/);
    expect(bad.outcome.failed[0]).not.toContain("tok-WRONG-7731");
    expect(logs.text()).not.toContain("tok-WRONG-7731");
    expect(bad.outcome.up).toBe(0);
  });

  it("a 201 with a body that is no SDP answer fails, and the session it created is DELETEd", async () => {
    const server = await startWhipServer({ reply: { status: 201, body: "hello, I am not SDP" } }, onTestFinished);
    const { outcome } = publish({ url: server.url("cam-8") });
    await waitFor(() => outcome.failed.length > 0, { message: "onFailed" });
    expect(outcome.failed[0]).toMatch(/^bad WHIP answer: /);
    await waitFor(() => server.requests.some((r) => r.method === "DELETE" && r.path === "/whip/cam-8/session/1"), {
      message: "DELETE of the half-made session",
    });
  });

  it("a 201 without a Location fails", async () => {
    const server = await startWhipServer({ reply: { status: 201, body: "v=0\r\n", location: false } }, onTestFinished);
    const { outcome } = publish({ url: server.url("cam-9") });
    await waitFor(() => outcome.failed.length > 0, { message: "onFailed" });
    expect(outcome.failed[0]).toContain("without a Location header");
  });

  it("a WHIP URL with user:password fails cleanly and never shows the password", async () => {
    const server = await startWhipServer({}, onTestFinished);
    const url = server.url("cam-10").replace("http://", "http://user:pa55-word-99@");
    const { outcome } = publish({ url });
    await waitFor(() => outcome.failed.length > 0, { message: "onFailed" });
    expect(outcome.failed[0]).not.toContain("pa55-word-99");
    expect(outcome.failed[0]).toContain("***@");
  });
});

// ---------------------------------------------------------------------------
// Chromium as the answering peer: a real WebRTC stack that is not werift.

describe("WHIP publisher against Chromium", () => {
  it.skipIf(!hasChromium)(
    "Chromium receives and decodes the copied H.264, notices a remote close at once, and leaves no process",
    async ({ annotate }) => {
      const browser = await launchChromium(onTestFinished);
      let peer: PeerPage | undefined;
      const server = await startWhipServer({ answer: async (offer) => keepLoopbackCandidates(await peer!.answerWhip(keepLoopbackCandidates(offer))) }, onTestFinished);
      peer = await browser.newPeerPage(server.origin, "/");

      const ffmpeg = await startFfmpegRtp(onTestFinished);
      const logs = captureLogs();
      const { session, outcome } = publish({ url: server.url("cam-chromium"), logger: logs.logger });
      ffmpeg.onPacket((p) => session.writeRtp(p));

      await waitFor(() => outcome.up === 1 || outcome.failed.length > 0, { timeoutMs: 10_000, message: "WHIP session up with Chromium" });
      expect(outcome.failed).toEqual([]);
      // The lean RTP path is what Chromium decodes, with whichever SRTP profile it chose.
      const up = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "WHIP session up");
      expect(up?.rtp_path).toMatch(/^(AEAD_AES_128_GCM|AES_CM_128_HMAC_SHA1_80)$/);
      const stats = () => peer!.stats();
      const decoded = await waitFor(
        async () => {
          const s = await stats();
          return s && s.framesDecoded > 0 && s.frameWidth > 0 ? s : null;
        },
        { timeoutMs: 15_000, intervalMs: 200, message: "Chromium decoded frames" },
      );
      expect(decoded).toMatchObject({ frameWidth: 320, frameHeight: 240, codec: "video/H264" });
      expect(decoded.keyFramesDecoded).toBeGreaterThan(0);
      const post = server.requests.find((r) => r.method === "POST")!;
      await annotate(
        `Chromium: POST→201 ${(post.answeredAt! - post.at).toFixed(0)} ms, POST→connected ${(outcome.upAt! - post.at).toFixed(0)} ms, ` +
          `first decoded-frame check: ${decoded.framesDecoded} frames (${decoded.keyFramesDecoded} key), PLIs ${decoded.pliCount}, FIRs ${decoded.firCount}, ` +
          `SRTP ${String(up?.rtp_path)}`,
      );
      // More frames keep coming: it is a stream, not one lucky frame.
      await waitFor(async () => ((await stats())?.framesDecoded ?? 0) >= decoded.framesDecoded + 15, {
        timeoutMs: 5_000,
        intervalMs: 200,
        message: "Chromium keeps decoding",
      });

      // Chromium closing its side sends a DTLS close_notify: the publisher reports it at once.
      const closedAt = performance.now();
      await peer.closePeer();
      await waitFor(() => outcome.failed.length > 0, { timeoutMs: 5_000, message: "onFailed after Chromium closed" });
      expect(outcome.failed[0]).toContain("closed the WebRTC session");
      // At once, against the 30 s of ICE consent expiry: 4 s for Chromium's close and the publisher's teardown under load.
      expect(outcome.failedAt! - closedAt).toBeLessThan(4_000);
      // The failed session DELETEs itself.
      await waitFor(() => server.requests.some((r) => r.method === "DELETE" && r.path === "/whip/cam-chromium/session/1"), {
        message: "DELETE after the failure",
      });
      await session.stop();

      await ffmpeg.stop();
      expect(isAlive(ffmpeg.pid)).toBe(false);
      expect((await processesMarked(browser.mark)).length).toBeGreaterThan(0);
      await browser.close();
      await waitFor(async () => (await processesMarked(browser.mark)).length === 0, {
        timeoutMs: 5_000,
        message: "every Chromium process gone",
      });
    },
  );
});
