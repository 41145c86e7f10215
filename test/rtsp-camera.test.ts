// The stand-in RTSP camera (test/fixtures/rtsp-server.py through
// test/helpers/rtsp-camera.ts), proved with the real ffprobe and ffmpeg the
// camera actor will run against it.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { describe, expect, onTestFinished, test } from "vitest";
import type { RegisterCleanup } from "./helpers/nats-harness.ts";
import { RtspCameraStartError, startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));
/** ffmpeg's socket I/O timeout for RTSP, µs: a dead server fails a probe in seconds, not never. */
const RTSP_IO_TIMEOUT_US = "5000000";

/** Lines FFmpeg prints when an H.264 stream is damaged (e.g. more than one slice per frame lost or reordered). */
const DAMAGE = /error while decoding|non-existing PPS|decode_slice_header error|no frame!|concealing|corrupt|Invalid NAL|non monotonically increasing dts/i;

interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface ToolRun {
  result: Promise<ToolResult>;
  stdout(): string;
  stderr(): string;
}

/**
 * Runs ffprobe/ffmpeg from an argument array (no shell), under a parent-death
 * signal, with a deadline after which it is killed. Always reaped: the result
 * settles only after exit, and the cleanup kills and awaits a run a failed
 * test left behind.
 */
function runTool(command: string, args: string[], opts: { onCleanup: RegisterCleanup; timeoutMs?: number }): ToolRun {
  const [cmd, argv] = SETPRIV ? [SETPRIV, ["--pdeathsig", "KILL", "--", command, ...args]] : [command, args];
  const child = spawn(cmd, argv, { env: process.env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  // 'close' comes after exit and after both pipes are drained.
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 20_000);
  const result = closed.finally(() => clearTimeout(timer)).then((exit) => ({ ...exit, stdout, stderr }));
  opts.onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await result.catch(() => {});
  });
  return { result, stdout: () => stdout, stderr: () => stderr };
}

interface ProbedStream {
  codec_name: string;
  width: number;
  height: number;
  r_frame_rate: string;
}

async function ffprobe(url: string, onCleanup: RegisterCleanup): Promise<ToolResult & { stream?: ProbedStream }> {
  const args = ["-v", "error", "-rtsp_transport", "tcp", "-timeout", RTSP_IO_TIMEOUT_US];
  args.push("-show_entries", "stream=codec_name,width,height,r_frame_rate", "-of", "json", url);
  const r = await runTool("ffprobe", args, { onCleanup }).result;
  if (r.code !== 0) return r;
  const parsed = JSON.parse(r.stdout) as { streams?: ProbedStream[] };
  return { ...r, stream: parsed.streams?.[0] };
}

/** pids of live stand-in servers whose command line contains `arg`. */
async function serverPids(arg: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8")).split("\0");
      if (argv.some((a) => a.endsWith("rtsp-server.py")) && argv.some((a) => a.includes(arg))) pids.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return pids;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

describe("RTSP camera stand-in", () => {
  test("serves H.264 at the size and frame rate asked for, over RTSP/TCP", async () => {
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      mounts: [{ path: "/hd", width: 1280, height: 720, fps: 25, bitrate: 2000 }],
    });
    expect(cam.url()).toBe(`rtsp://127.0.0.1:${cam.port}/hd`);

    const probe = await ffprobe(cam.url(), onTestFinished);
    expect(probe.code, probe.stderr).toBe(0);
    expect(probe.stream).toMatchObject({ codec_name: "h264", width: 1280, height: 720, r_frame_rate: "25/1" });
  });

  test("a protected mount answers 401 without or with wrong credentials, and streams with the right ones", async () => {
    const credentials = { user: "admin", password: "p@ss:w/rd" }; // needs percent-encoding in a URL
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      credentials,
      mounts: [{ path: "/door" }, { path: "/lobby", credentials: null }],
    });
    expect(cam.url("/door", { withCredentials: true })).toBe(`rtsp://admin:p%40ss%3Aw%2Frd@127.0.0.1:${cam.port}/door`);

    const [anonymous, wrong, right, open] = await Promise.all([
      ffprobe(cam.url("/door"), onTestFinished),
      ffprobe(cam.url("/door", { credentials: { user: "admin", password: "wrong" } }), onTestFinished),
      ffprobe(cam.url("/door", { withCredentials: true }), onTestFinished),
      ffprobe(cam.url("/lobby"), onTestFinished),
    ]);
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toMatch(/401 Unauthorized/);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/401 Unauthorized/);
    expect(right.code, right.stderr).toBe(0);
    expect(right.stream?.codec_name).toBe("h264");
    expect(open.code, open.stderr).toBe(0);
  });

  test("a camera killed with SIGKILL comes back on the same port after restart()", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished });
    const { port, pid: firstPid } = cam;
    expect((await ffprobe(cam.url(), onTestFinished)).code).toBe(0);

    const exit = await cam.kill();
    expect(exit).toEqual({ code: null, signal: "SIGKILL" });
    expect(cam.running).toBe(false);
    expect(isAlive(firstPid!)).toBe(false);
    const down = await ffprobe(cam.url(), onTestFinished);
    expect(down.code).not.toBe(0);
    expect(down.stderr).toMatch(/Connection refused/);

    await cam.restart();
    expect(cam.port).toBe(port);
    expect(cam.pid).not.toBe(firstPid);
    const back = await ffprobe(cam.url(), onTestFinished);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stream?.codec_name).toBe("h264");
  });

  test("ffmpeg copies and decodes 3 s of the stream without damage (one slice per frame)", async () => {
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      mounts: [{ path: "/hd", width: 1280, height: 720, fps: 25, bitrate: 2000, pattern: "snow" }],
    });
    // One input, three outputs: the camera actor's path (-c:v copy), a full
    // decode (one framecrc line per decoded frame on stdout), and a second's
    // NAL headers. x264's default of one slice per core decoded cleanly
    // here but broke elsewhere (found on Debian 12 here), so the slice count is checked itself.
    const args = ["-hide_banner", "-nostats", "-rtsp_transport", "tcp", "-timeout", RTSP_IO_TIMEOUT_US, "-i", cam.url()];
    args.push("-map", "0:v", "-c:v", "copy", "-t", "3", "-f", "null", "-");
    args.push("-map", "0:v", "-t", "3", "-f", "framecrc", "pipe:1");
    args.push("-map", "0:v", "-c:v", "copy", "-bsf:v", "trace_headers", "-t", "1", "-f", "null", "-");
    const r = await runTool("ffmpeg", args, { onCleanup: onTestFinished }).result;

    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    expect(r.stderr.split("\n").filter((l) => DAMAGE.test(l))).toEqual([]);
    expect(r.stderr).toMatch(/Stream #0:0: Video: h264 \(Constrained Baseline\).*1280x720/);
    const frames = r.stdout.split("\n").filter((l) => /^0,/.test(l));
    // 3 s × 25 fps = 75. The live source drops a frame it encodes too late (two
    // test workers share 2 cores); damage is judged by the decoder's messages above.
    expect(frames.length).toBeGreaterThanOrEqual(60);
    const traced = (what: RegExp) => r.stderr.split("\n").filter((l) => what.test(l)).length;
    const packets = traced(/^\[trace_headers @ \w+\] Packet: /);
    expect(packets).toBeGreaterThanOrEqual(20);
    expect(traced(/^\[trace_headers @ \w+\] Slice Header$/)).toBe(packets); // one slice per frame
  });

  test("non-H.264 mounts report their codec", async () => {
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      mounts: [
        { path: "/mjpeg", codec: "mjpeg" },
        { path: "/hevc", codec: "h265", width: 320, height: 240, fps: 10 },
      ],
    });
    const [mjpeg, hevc] = await Promise.all([ffprobe(cam.url("/mjpeg"), onTestFinished), ffprobe(cam.url("/hevc"), onTestFinished)]);
    expect(mjpeg.code, mjpeg.stderr).toBe(0);
    expect(mjpeg.stream).toMatchObject({ codec_name: "mjpeg", width: 640, height: 360 });
    expect(hevc.code, hevc.stderr).toBe(0);
    expect(hevc.stream).toMatchObject({ codec_name: "hevc", width: 320, height: 240, r_frame_rate: "10/1" });
  });

  test("a static mount decodes to bit-identical frames", async () => {
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      mounts: [{ path: "/still", static: true, pattern: "snow", fps: 15 }],
    });
    const args = ["-hide_banner", "-nostats", "-rtsp_transport", "tcp", "-timeout", RTSP_IO_TIMEOUT_US, "-i", cam.url()];
    args.push("-t", "2", "-f", "framemd5", "pipe:1");
    const r = await runTool("ffmpeg", args, { onCleanup: onTestFinished }).result;

    expect(r.code, r.stderr).toBe(0);
    // framemd5 lines: stream, dts, pts, duration, size, md5
    const hashes = r.stdout.split("\n").filter((l) => /^0,/.test(l)).map((l) => l.split(",").at(-1)!.trim());
    expect(hashes.length).toBeGreaterThanOrEqual(20);
    expect(new Set(hashes).size).toBe(1);
  });

  test("a client joining a shared stream does not rewind the timestamps of a client already watching", async () => {
    // Regression: gst-rtsp-server 1.22 answered every PLAY's "Range: npt=0-"
    // with a flushing seek of the shared media, and the first client's DTS
    // jumped back by as long as it had watched.
    const cam = await startRtspCamera({ onCleanup: onTestFinished, shared: true, mounts: [{ path: "/shared", fps: 25 }] });
    const args = ["-hide_banner", "-nostats", "-progress", "pipe:1", "-rtsp_transport", "tcp", "-timeout", RTSP_IO_TIMEOUT_US];
    args.push("-i", cam.url(), "-c:v", "copy", "-t", "5", "-f", "null", "-");
    const watcher = runTool("ffmpeg", args, { onCleanup: onTestFinished });
    // Joins once the watcher has frames, i.e. the shared media is playing.
    await waitFor(() => /^frame=[1-9]/m.test(watcher.stdout()), { timeoutMs: 10_000, message: "first client receiving" });

    const joiner = await ffprobe(cam.url(), onTestFinished);
    expect(joiner.code, joiner.stderr).toBe(0);
    const first = await watcher.result;
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr.split("\n").filter((l) => DAMAGE.test(l))).toEqual([]);
  });

  test("stop() ends the server with SIGTERM, cleanly, and its pid is gone", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished });
    const pid = cam.pid!;
    expect(isAlive(pid)).toBe(true);

    const exit = await cam.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(cam.running).toBe(false);
    expect(cam.pid).toBeUndefined();
    expect(isAlive(pid)).toBe(false);
    expect(cam.stderrTail()).toMatch(/SIGTERM, exiting/);
    expect(await cam.stop()).toBeUndefined(); // idempotent
  });

  test("a start that fails rejects with the server's own words and leaves no process", async () => {
    const tag = `/fail-${process.pid}-${Date.now()}`; // finds this test's servers in /proc

    const bad = startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: `${tag}-a`, pattern: "no-such-pattern" }] });
    await expect(bad).rejects.toThrow(RtspCameraStartError);
    await expect(bad).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/could not set property "pattern"/) });

    const first = await startRtspCamera({ onCleanup: onTestFinished });
    const taken = startRtspCamera({ onCleanup: onTestFinished, port: first.port, mounts: [{ path: `${tag}-b` }] });
    await expect(taken).rejects.toMatchObject({ exitCode: 1, message: expect.stringMatching(/cannot listen/) });

    const slow = startRtspCamera({ onCleanup: onTestFinished, readyTimeoutMs: 1, mounts: [{ path: `${tag}-c` }] });
    await expect(slow).rejects.toMatchObject({ message: expect.stringMatching(/no READY line within 1 ms/) });

    expect(await serverPids(tag)).toEqual([]);
    // The camera that did start is untouched by the failures around it.
    expect((await ffprobe(first.url(), onTestFinished)).code).toBe(0);
  });
});
