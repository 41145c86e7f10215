// FFmpeg ingest of one camera (actors/camera/ingest.ts): the argument builder
// (ffmpeg-args.ts) as a pure function, then the real thing against the
// stand-in RTSP camera (test/helpers/rtsp-camera.ts) and Debian's ffmpeg 5.1.
// Reading FFmpeg's output and classifying its exit: test/ffmpeg-output.test.ts.

import { createSocket } from "node:dgram";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { describe, expect, onTestFinished, test } from "vitest";
import {
  buildFfmpegArgs,
  IngestSourceError,
  RTSP_FAST_PROBE,
  startIngest,
  type AnalysisFrame,
  type IngestFailure,
  type IngestHandle,
  type IngestOptions,
  type IngestProgress,
} from "../actors/camera/ingest.ts";
import type { StartIngest } from "../actors/camera/camera-actor.ts";
import { H264_NAL, h264NalTypes, rtpHeader, rtpPayload } from "../media/index.ts";
import { reservePort } from "./helpers/ports.ts";
import { CameraSpecSchema, type CameraSpec, type CameraSpecInput, type StreamInfo } from "../subjects/index.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

function spec(url: string, more: Partial<CameraSpecInput> = {}): CameraSpec {
  return CameraSpecSchema.parse({ id: "cam1", url, ...more });
}

const PORT = 40_000;
const RTP_OUT = ["-map", "0:v:0", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "rtp", "-payload_type", "96", "-rtpflags", "skip_rtcp", `rtp://127.0.0.1:${PORT}?pkt_size=1200`];
const HEAD = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-progress", "pipe:1", "-stats_period", "0.5"];

/** Index of `seq` as a contiguous run inside `args`, or -1. */
function indexOfSeq(args: string[], seq: string[]): number {
  for (let i = 0; i + seq.length <= args.length; i++) if (seq.every((s, j) => args[i + j] === s)) return i;
  return -1;
}

describe("buildFfmpegArgs", () => {
  const opts = { rtpPort: PORT, allowLocalSources: false };

  test("RTSP: transport, socket timeout in µs, video only; H.264 copied as RTP; no analysis output with AI off", () => {
    const url = "rtsp://admin:pw@10.0.0.5:554/stream1";
    expect(buildFfmpegArgs(spec(url), opts)).toEqual([
      ...HEAD,
      ...["-rtsp_transport", "tcp", "-timeout", "5000000", "-allowed_media_types", "video", ...RTSP_FAST_PROBE, "-i", url],
      ...RTP_OUT,
    ]);
    const udp = buildFfmpegArgs(spec(url.replace("rtsp:", "rtsps:"), { rtsp_transport: "udp" }), { ...opts, ioTimeoutMs: 2500 });
    expect(indexOfSeq(udp, ["-rtsp_transport", "udp", "-timeout", "2500000"])).toBeGreaterThan(0);
  });

  test.each([
    ["http://cam.local/video.ts", ["-rw_timeout", "5000000", "-i", "http://cam.local/video.ts"]],
    ["https://cam.local/live.m3u8", ["-rw_timeout", "5000000", "-i", "https://cam.local/live.m3u8"]],
    ["srt://10.0.0.7:9000?streamid=x", ["-timeout", "5000000", "-i", "srt://10.0.0.7:9000?streamid=x"]],
    ["udp://239.0.0.1:1234", ["-timeout", "5000000", "-i", "udp://239.0.0.1:1234"]],
  ])("%s: input options, then the same RTP output", (url, input) => {
    const args = buildFfmpegArgs(spec(url), opts);
    expect(args).toEqual([...HEAD, ...input, ...RTP_OUT]);
    expect(args).not.toContain("-rtsp_transport");
  });

  test.each([["file:///srv/clips/door.mp4"], ["testsrc:?size=1280x720&rate=25"]])(
    "%s needs allowLocalSources: SOURCE_NOT_ALLOWED otherwise",
    (url) => {
      expect(() => buildFfmpegArgs(spec(url), opts)).toThrow(IngestSourceError);
      expect(() => buildFfmpegArgs(spec(url), opts)).toThrow(expect.objectContaining({ code: "SOURCE_NOT_ALLOWED" }));
    },
  );

  test("file: plays in real time, looped, from the decoded path", () => {
    const args = buildFfmpegArgs(spec("file:///srv/my%20clips/door.mp4"), { ...opts, allowLocalSources: true });
    expect(args).toEqual([...HEAD, "-re", "-stream_loop", "-1", "-i", "file:/srv/my clips/door.mp4", ...RTP_OUT]);
  });

  test("testsrc: lavfi pattern encoded to H.264 baseline (yuv420p before the profile), never copied", () => {
    const args = buildFfmpegArgs(spec("testsrc:?size=1280x720&rate=25"), { ...opts, allowLocalSources: true, video: "copy" });
    expect(indexOfSeq(args, ["-re", "-f", "lavfi", "-i", "testsrc=size=1280x720:rate=25"])).toBeGreaterThan(0);
    expect(args).not.toContain("copy");
    const enc = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-profile:v", "baseline"];
    expect(indexOfSeq(args, enc)).toBeGreaterThan(args.indexOf("-i"));
    expect(args.at(-1)).toBe(`rtp://127.0.0.1:${PORT}?pkt_size=1200`);
    // Defaults when the query is empty.
    expect(buildFfmpegArgs(spec("testsrc:"), { ...opts, allowLocalSources: true })).toContain("testsrc=size=640x360:rate=15");
  });

  test.each([["testsrc:?size=1280x721"], ["testsrc:?size=640x360,movie=/etc/passwd"], ["testsrc:?rate=0"], ["testsrc:?rate=1e3"], ["testsrc:?color=red"]])(
    "%s is refused (its values go into a filter graph)",
    (url) => {
      expect(() => buildFfmpegArgs(spec(url), { ...opts, allowLocalSources: true })).toThrow(IngestSourceError);
    },
  );

  test("transcoding (video: encode) replaces the copy with libx264 baseline", () => {
    const args = buildFfmpegArgs(spec("rtsp://10.0.0.5/hevc"), { ...opts, video: "encode" });
    expect(args).not.toContain("copy");
    expect(args).not.toContain("h264_mp4toannexb");
    expect(indexOfSeq(args, ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-profile:v", "baseline"])).toBeGreaterThan(0);
  });

  test("AI on: a second output of sampled, scaled gray frames on fd 3; the RTP output stays first", () => {
    const url = "rtsp://10.0.0.5/s";
    const args = buildFfmpegArgs(spec(url, { ai: { enabled: true, max_fps: 2 } }), opts);
    expect(args).toEqual([
      ...HEAD,
      ...["-rtsp_transport", "tcp", "-timeout", "5000000", "-allowed_media_types", "video", ...RTSP_FAST_PROBE, "-i", url],
      ...RTP_OUT,
      ...["-map", "0:v:0", "-vf", "fps=2,scale=w=min(320\\,iw):h=-2", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:3"],
    ]);
    const everyN = buildFfmpegArgs(spec(url, { ai: { enabled: true, every_n: 5 } }), { ...opts, analysisWidth: 640, analysisPixFmt: "rgb24" });
    expect(everyN).toContain("select=not(mod(n\\,5)),scale=w=min(640\\,iw):h=-2");
    expect(indexOfSeq(everyN, ["-pix_fmt", "rgb24", "pipe:3"])).toBeGreaterThan(0);
    // AI off (the default): no decode, no second output.
    const off = buildFfmpegArgs(spec(url), opts);
    expect(off).not.toContain("pipe:3");
    expect(off).not.toContain("-vf");
    expect(off.filter((a) => a === "-map")).toHaveLength(1);
  });
});

// ---------------------------------------------------------------- against real processes

interface Recorded {
  handle: IngestHandle;
  /** performance.now() when record() started the ingest (the `at`s below are on the same clock). */
  started: number;
  ready: Array<{ stream: StreamInfo; at: number }>;
  failed: Array<{ failure: IngestFailure; at: number }>;
  progress: IngestProgress[];
  rtp: Array<{ packet: Buffer; at: number }>;
  frames: AnalysisFrame[];
}

/** Starts an ingest that records everything; its stop() is registered before any assert. */
async function record(camera: CameraSpec, opts: Partial<IngestOptions> = {}): Promise<Recorded> {
  const r: Omit<Recorded, "handle"> = { started: performance.now(), ready: [], failed: [], progress: [], rtp: [], frames: [] };
  const handle = await startIngest(camera, {
    allowLocalSources: false,
    onReady: (stream) => r.ready.push({ stream, at: performance.now() }),
    onProgress: (p) => r.progress.push(p),
    onFailed: (failure) => r.failed.push({ failure, at: performance.now() }),
    onRtp: (packet) => r.rtp.push({ packet, at: performance.now() }),
    onFrame: (frame) => r.frames.push(frame),
    ...opts,
  });
  onTestFinished(() => handle.stop());
  return { ...r, handle };
}

async function failure(r: Recorded, timeoutMs = 10_000): Promise<IngestFailure> {
  const f = await waitFor(() => r.failed[0], { timeoutMs, message: "onFailed" });
  return f.failure;
}

/** A pid that is gone: no /proc entry at all, so not a zombie either (a zombie keeps its entry until reaped). */
function isGone(pid: number): boolean {
  return !existsSync(`/proc/${pid}`);
}

/** Whether a UDP socket is bound to 127.0.0.1:port (from /proc/net/udp). */
async function udpBound(port: number): Promise<boolean> {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const table = await readFile("/proc/net/udp", "utf8");
  return table.split("\n").some((l) => l.trim().split(/\s+/)[1] === local);
}

/** Proves the run left nothing behind: every ffmpeg it ran is gone and reaped, and its socket is closed. */
async function expectNothingLeft(r: Recorded, rtpPort: number | undefined): Promise<void> {
  expect(r.handle.pid).toBeUndefined();
  for (const { pid } of r.handle.spawned) expect(isGone(pid), `ffmpeg pid ${pid} still has a /proc entry`).toBe(true);
  if (rtpPort !== undefined) expect(await udpBound(rtpPort)).toBe(false);
}

/** The last packet of a frame (H.264 sets the marker there). */
const marker = (p: Buffer) => rtpHeader(p)?.marker === true;

describe("ingest from the stand-in RTSP camera (real ffmpeg)", () => {
  test("streams: onReady with the camera's size and rate, RTP (PT 96) at a steady rate, progress; stop() leaves nothing", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/cam", width: 640, height: 360, fps: 15 }] });
    const r = await record(spec(cam.url()));

    const ready = await waitFor(() => r.ready[0], { timeoutMs: 10_000, message: "onReady" });
    expect(ready.stream).toEqual({ codec: "h264", width: 640, height: 360, fps: 15 });
    console.info(`camera-ingest: RTSP start → onReady in ${ready.at - r.started} ms`);
    const pid = r.handle.pid!;
    expect((await readFile(`/proc/${pid}/comm`, "utf8")).trim()).toBe("ffmpeg");
    const rtpPort = r.handle.rtpPort!;
    expect(await udpBound(rtpPort)).toBe(true);

    // Anyone else on the machine sending to the port is ignored (the one-SSRC check below).
    const intruder = createSocket("udp4");
    onTestFinished(() => new Promise<void>((res) => intruder.close(() => res())));
    const forged = Buffer.alloc(20);
    forged.writeUInt8(0x80, 0);
    forged.writeUInt8(96, 1);
    forged.writeUInt32BE(0xdeadbeef, 8);
    await new Promise<void>((res, rej) => intruder.send(forged, rtpPort, "127.0.0.1", (err) => (err ? rej(err) : res())));

    // FFmpeg sends what it buffered while probing (~2 s, up to 40 frames) in
    // one burst first, so the rate is judged on the 60 frames after it: 4 s
    // at 15 fps, so a stall of this process of up to 1 s at either end of the
    // window (a loaded machine) still reads as more than 12 fps. 100 frames
    // take 6.7 s after the probe; the deadline leaves as much again for a
    // slow start.
    const frameEnds = () => r.rtp.filter((x) => marker(x.packet));
    await waitFor(() => frameEnds().length >= 100, { timeoutMs: 20_000, message: "100 frames of RTP" });
    expect(r.rtp.every((x) => rtpHeader(x.packet)?.payloadType === 96)).toBe(true);
    expect(new Set(r.rtp.map((x) => rtpHeader(x.packet)?.ssrc)).size).toBe(1); // one SSRC
    const steady = frameEnds().slice(40, 100);
    const rate = (steady.length - 1) / ((steady.at(-1)!.at - steady[0]!.at) / 1000);
    expect(rate).toBeGreaterThan(12);
    expect(rate).toBeLessThan(18);
    // 90 kHz / 15 fps = 6000 per frame. A frame whose last packet was lost on
    // the way (UDP, a full socket buffer) merges with the next: a step of
    // 12000. Any step is whole frames; nearly all are one.
    const ts = (x: { packet: Buffer }) => rtpHeader(x.packet)!.timestamp;
    const steps = steady.slice(1).map((x, i) => (ts(x) - ts(steady[i]!)) >>> 0);
    expect(steps.every((d) => d > 0 && d % 6000 === 0)).toBe(true);
    expect(steps.filter((d) => d === 6000).length).toBeGreaterThanOrEqual(steps.length - 3);

    // Progress only when the count goes up, and it matches what arrived.
    expect(r.progress.length).toBeGreaterThan(3);
    for (let i = 1; i < r.progress.length; i++) {
      expect(r.progress[i]!.frames).toBeGreaterThan(r.progress[i - 1]!.frames);
      expect(r.progress[i]!.lastFrameTs).toBeGreaterThanOrEqual(r.progress[i - 1]!.lastFrameTs);
    }
    expect(r.failed).toEqual([]);
    expect(r.frames).toEqual([]); // AI off: no analysis output

    await r.handle.stop();
    await expectNothingLeft(r, rtpPort);
    expect(isGone(pid)).toBe(true);
    const after = r.rtp.length;
    await r.handle.stop(); // idempotent
    expect(r.failed).toEqual([]); // stop() is not a failure
    expect(r.rtp.length).toBe(after);
  });

  test("credentials: the right password streams, a wrong one is SOURCE_AUTH and never shows up in the detail", async () => {
    const credentials = { user: "admin", password: "s3cret!pw" };
    const cam = await startRtspCamera({ onCleanup: onTestFinished, credentials, mounts: [{ path: "/door" }] });
    const right = await record(spec(cam.url("/door", { withCredentials: true })));
    const wrong = await record(spec(cam.url("/door", { credentials: { user: "admin", password: "wr0ng-pw" } })));
    const none = await record(spec(cam.url("/door")));

    const f = await failure(wrong);
    expect(f.code).toBe("SOURCE_AUTH");
    expect(f.detail).toMatch(/401 Unauthorized/);
    expect(f.detail).not.toMatch(/wr0ng-pw|s3cret/);
    expect(f.detail).toContain("rtsp://***@127.0.0.1");
    expect((await failure(none)).code).toBe("SOURCE_AUTH");

    await waitFor(() => right.ready[0], { timeoutMs: 10_000, message: "onReady with the right password" });
    expect(right.failed).toEqual([]);
    await expectNothingLeft(wrong, undefined);
  });

  test("a closed port is SOURCE_UNREACHABLE at once, not after the I/O timeout", async () => {
    const port = await reservePort(); // free, and below the ephemeral range: no connect() can land on itself there
    // A refused connect is reported as soon as FFmpeg is up: measured from its
    // spawn, the bound leaves FFmpeg 3 s to exec and load its libraries on a
    // loaded machine, yet is far below the I/O timeout a read failure would need.
    const r = await record(spec(`rtsp://127.0.0.1:${port}/cam`), { ioTimeoutMs: 10_000 });
    const f = await failure(r, 8_000);
    expect(f).toEqual({ code: "SOURCE_UNREACHABLE", detail: `rtsp://127.0.0.1:${port}/cam: Connection refused` });
    expect(r.handle.spawned).toHaveLength(1);
    expect(r.failed[0]!.at - r.handle.spawned[0]!.at).toBeLessThan(3_000);
    expect(r.ready).toEqual([]);
    await expectNothingLeft(r, undefined);
  });

  test("the camera killed mid-stream: FFMPEG_EXITED (the stream ended) at once; the next run finds SOURCE_UNREACHABLE", async () => {
    // SIGKILL closes the server's sockets, so FFmpeg reads an orderly end of
    // the TCP stream: no error line, exit code 0, indistinguishable from a
    // source that ends its session. It is reported as FFMPEG_EXITED ("the
    // source ended the stream"); the reconnect then sees "Connection refused".
    // "At once" is against the I/O timeout (10 s here), which a missed end of
    // stream would wait for: 4 s covers the server's death, FFmpeg's trailer
    // and exit, and the pipes' drain (at most 1 s) on a loaded machine.
    const cam = await startRtspCamera({ onCleanup: onTestFinished });
    const r = await record(spec(cam.url()), { ioTimeoutMs: 10_000 });
    await waitFor(() => r.ready[0], { timeoutMs: 10_000, message: "onReady" });
    const rtpPort = r.handle.rtpPort;

    const killedAt = performance.now();
    await cam.kill();
    const f = await failure(r, 8_000);
    expect(f.code).toBe("FFMPEG_EXITED");
    expect(f.detail).toMatch(/^the source ended the stream \(ffmpeg exited with code 0\)/);
    expect(r.failed[0]!.at - killedAt).toBeLessThan(4_000);
    await expectNothingLeft(r, rtpPort);

    const again = await record(spec(cam.url()));
    expect((await failure(again, 5_000)).code).toBe("SOURCE_UNREACHABLE");
  });

  test("a camera that freezes mid-stream (SIGSTOP) is SOURCE_UNREACHABLE after the I/O timeout", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished });
    const serverPid = cam.pid!;
    // Registered after the camera's stop, so it runs first: a stopped process ignores SIGTERM.
    onTestFinished(async () => void process.kill(serverPid, "SIGCONT"));
    const r = await record(spec(cam.url()), { ioTimeoutMs: 1_000 });
    await waitFor(() => r.ready[0], { timeoutMs: 10_000, message: "onReady" });

    const frozenAt = performance.now();
    process.kill(serverPid, "SIGSTOP");
    const f = await failure(r, 10_000);
    expect(f).toMatchObject({ code: "SOURCE_UNREACHABLE", detail: expect.stringMatching(/Connection timed out$/) });
    console.info(`camera-ingest: frozen camera → onFailed in ${r.failed[0]!.at - frozenAt} ms (ioTimeoutMs 1000)`);
    expect(r.failed[0]!.at - frozenAt).toBeLessThan(6_000);
  });

  test("a camera that is not H.264 is UNSUPPORTED_CODEC; with transcode it streams as H.264", async () => {
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      mounts: [{ path: "/mjpeg", codec: "mjpeg" }, { path: "/hevc", codec: "h265", width: 320, height: 240, fps: 10 }],
    });
    const mjpeg = await record(spec(cam.url("/mjpeg")));
    const hevc = await record(spec(cam.url("/hevc")));
    const transcoded = await record(spec(cam.url("/hevc")), { transcode: true });

    expect(await failure(mjpeg)).toEqual({ code: "UNSUPPORTED_CODEC", detail: "source video is mjpeg, not H.264, and transcoding is off" });
    expect(await failure(hevc)).toEqual({ code: "UNSUPPORTED_CODEC", detail: "source video is hevc, not H.264, and transcoding is off" });
    expect(mjpeg.rtp).toEqual([]);

    const ready = await waitFor(() => transcoded.ready[0], { timeoutMs: 15_000, message: "onReady of the transcoded camera" });
    expect(ready.stream).toEqual({ codec: "hevc", width: 320, height: 240, fps: 10 });
    await waitFor(() => transcoded.rtp.filter((x) => marker(x.packet)).length >= 5, { timeoutMs: 10_000, message: "transcoded RTP" });
    expect(transcoded.rtp.every((x) => rtpHeader(x.packet)?.payloadType === 96)).toBe(true);
    expect(transcoded.failed).toEqual([]);
    expect(transcoded.handle.spawned).toHaveLength(2); // the copy attempt, then the encoder
    await transcoded.handle.stop();
    await expectNothingLeft(transcoded, undefined);
    await expectNothingLeft(mjpeg, undefined);
  });

  test("AI on: onFrame gets gray frames scaled to 320 wide at about max_fps, while RTP flows", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/cam", width: 640, height: 360, fps: 15 }] });
    const r = await record(spec(cam.url(), { ai: { enabled: true, max_fps: 5 } }));

    // The first frames come in a burst (FFmpeg's probe buffer); the rate is judged after it.
    // 30 frames after the burst: 6 s at 5 fps, so a stall of this process of
    // up to 1 s at an end of the window still reads as more than 4 fps. 40
    // frames take 8 s after the probe; the deadline leaves as much again.
    await waitFor(() => r.frames.length >= 40, { timeoutMs: 25_000, message: "40 analysis frames" });
    for (const f of r.frames) {
      expect(f).toMatchObject({ width: 320, height: 180, pixFmt: "gray" });
      expect(f.data.length).toBe(320 * 180);
    }
    const steady = r.frames.slice(10, 40);
    const rate = (steady.length - 1) / ((steady.at(-1)!.ts - steady[0]!.ts) / 1000);
    expect(rate).toBeGreaterThan(4);
    expect(rate).toBeLessThan(6);
    // A moving ball on black: some pixels are lit, most are not.
    const lit = r.frames.at(-1)!.data.filter((v) => v > 128).length;
    expect(lit).toBeGreaterThan(0);
    expect(lit).toBeLessThan(320 * 180 / 2);
    expect(r.rtp.length).toBeGreaterThan(0);
    expect(r.ready[0]!.stream).toEqual({ codec: "h264", width: 640, height: 360, fps: 15 });
  });

  test("testsrc: refused without allowLocalSources (nothing spawned), streams H.264 RTP with it", async () => {
    const url = "testsrc:?size=320x240&rate=10";
    const refused = await record(spec(url));
    expect(await failure(refused, 2_000)).toMatchObject({ code: "SOURCE_NOT_ALLOWED" });
    expect(refused.handle.spawned).toEqual([]);
    expect(refused.handle.rtpPort).toBeUndefined();

    const r = await record(spec(url), { allowLocalSources: true });
    const ready = await waitFor(() => r.ready[0], { timeoutMs: 10_000, message: "onReady" });
    expect(ready.stream).toEqual({ codec: "rawvideo", width: 320, height: 240, fps: 10 });
    await waitFor(() => r.rtp.filter((x) => marker(x.packet)).length >= 10, { timeoutMs: 10_000, message: "10 frames of RTP" });
    expect(r.rtp.every((x) => rtpHeader(x.packet)?.payloadType === 96)).toBe(true);
    // A key frame's access unit first (the IDR, or the SEI/SPS ahead of it, alone or aggregated): a viewer can decode at once.
    const firstNal = h264NalTypes(rtpPayload(r.rtp[0]!.packet)!)[0];
    expect([H264_NAL.IDR, H264_NAL.SEI, H264_NAL.SPS]).toContain(firstNal);
  });

  test("stop() while FFmpeg is still connecting: no callback at all, nothing left", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished });
    const r = await record(spec(cam.url()));
    // Resolved means spawned and bound, not connected.
    const pid = r.handle.pid!;
    const port = r.handle.rtpPort!;
    expect(pid).toBeGreaterThan(0);
    expect(await udpBound(port)).toBe(true);
    await r.handle.stop();
    expect(r.ready).toEqual([]);
    expect(r.failed).toEqual([]);
    expect(r.rtp).toEqual([]);
    expect(isGone(pid)).toBe(true);
    await expectNothingLeft(r, port);
  });

  test("startIngest fits the camera actor's StartIngest", () => {
    const fits: StartIngest = startIngest;
    expect(fits).toBe(startIngest);
  });
});
