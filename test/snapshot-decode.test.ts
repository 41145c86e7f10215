// The snapshot decoder (actors/camera/snapshot.ts) against the real FFmpeg:
// an H.264 stream of FFmpeg's testsrc (a moving pattern) made here, decoded
// to the JPEG of its LAST frame; its deadline and abort kill FFmpeg.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import jpeg from "jpeg-js";
import { describe, expect, it } from "vitest";
import { decodeSnapshot } from "../actors/camera/snapshot.ts";

const run = promisify(execFile);
const FRAMES = 30;

/** testsrc as Annex-B H.264: one IDR, then P-frames only. */
async function testStream(): Promise<Buffer> {
  const { stdout } = await run(
    "ffmpeg",
    ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", String(FRAMES), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "1000", "-bf", "0", "-f", "h264", "pipe:1"],
    { encoding: "buffer", maxBuffer: 16 * 1024 * 1024 },
  );
  return stdout;
}

/** Frame `n` of the same stream, decoded by FFmpeg directly, as RGBA. */
async function frameAt(stream: Buffer, n: number): Promise<Uint8Array> {
  const child = execFile("ffmpeg", ["-hide_banner", "-loglevel", "error", "-f", "h264", "-i", "pipe:0", "-vf", `select=eq(n\\,${n})`, "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "2", "-f", "image2pipe", "pipe:1"], {
    encoding: "buffer",
    maxBuffer: 16 * 1024 * 1024,
  });
  const out = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    child.stdout!.on("data", (c: Buffer) => chunks.push(c));
    child.on("close", (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`ffmpeg exit ${code}`))));
  });
  child.stdin!.end(stream);
  return jpeg.decode(await out, { useTArray: true }).data;
}

function meanDiff(a: Uint8Array, b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

describe("decodeSnapshot", () => {
  it("gives the last frame of the GOP, not its key frame, at the source's size or scaled (aspect kept, even height, never upscaled)", async () => {
    const stream = await testStream();
    const picture = jpeg.decode(await decodeSnapshot({ annexB: stream, frames: FRAMES, deadlineMs: 5000 }), { useTArray: true });
    expect([picture.width, picture.height]).toEqual([320, 240]);
    const [first, last] = await Promise.all([frameAt(stream, 0), frameAt(stream, FRAMES - 1)]);
    const toLast = meanDiff(picture.data, last);
    const toFirst = meanDiff(picture.data, first);
    expect(toLast).toBeLessThan(4); // JPEG noise only
    expect(toFirst).toBeGreaterThan(toLast * 2);

    const scaled = jpeg.decode(await decodeSnapshot({ annexB: stream, frames: FRAMES, width: 100, deadlineMs: 5000 }));
    expect([scaled.width, scaled.height]).toEqual([100, 76]); // 75 rounded to even
    const notUp = jpeg.decode(await decodeSnapshot({ annexB: stream, frames: FRAMES, width: 1000, deadlineMs: 5000 }));
    expect([notUp.width, notUp.height]).toEqual([320, 240]);
  });

  it("fails with UNAVAILABLE on garbage, on a missed deadline and on abort, leaving no FFmpeg", async () => {
    await expect(decodeSnapshot({ annexB: Buffer.from("not h264 at all"), frames: 1, deadlineMs: 5000 })).rejects.toMatchObject({ code: "UNAVAILABLE", message: /could not decode/ });
    const stream = await testStream();
    await expect(decodeSnapshot({ annexB: stream, frames: FRAMES, deadlineMs: 1 })).rejects.toMatchObject({ code: "UNAVAILABLE", message: /longer than 1 ms/ });
    const abort = new AbortController();
    const decoding = decodeSnapshot({ annexB: stream, frames: FRAMES, deadlineMs: 5000, signal: abort.signal });
    abort.abort();
    await expect(decoding).rejects.toMatchObject({ code: "UNAVAILABLE" });
    // pgrep exits 1 when it finds nothing.
    const { stdout } = await run("pgrep", ["-P", String(process.pid), "-x", "ffmpeg"]).catch(() => ({ stdout: "" }));
    expect(stdout.trim()).toBe("");
  });
});
