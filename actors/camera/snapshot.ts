import { superviseSpawn, withTimeout, timedOut } from "../../runtime/index.ts";
import { CamfleetError } from "../../subjects/index.ts";

/**
 * A camera's latest frame as a JPEG: its cached GOP (Annex-B, from the last
 * IDR on) through a one-shot FFmpeg that decodes every frame (each depends on
 * the ones before) but scales and encodes only the last. Nothing runs until
 * someone asks; the camera's own FFmpeg keeps copying H.264 untouched.
 */

export interface DecodeSnapshotOptions {
  /** The GOP as an Annex-B stream, starting at an IDR with its parameter sets. */
  annexB: Buffer;
  /** Frames in `annexB`; the last one becomes the picture. */
  frames: number;
  /** Output width in pixels; the height keeps the aspect ratio (even). Never upscales. Default: the source's size. */
  width?: number;
  /** The whole decode must end within this, ms; FFmpeg is killed otherwise. */
  deadlineMs: number;
  /** Aborts the decode (the camera stops); FFmpeg is killed. */
  signal?: AbortSignal;
  /** FFmpeg binary. Default "ffmpeg" on PATH. */
  ffmpegPath?: string;
}

export type DecodeSnapshot = (options: DecodeSnapshotOptions) => Promise<Buffer>;

/** JPEG quality of FFmpeg's mjpeg encoder, 2 (best) .. 31; 4 keeps a 1080p frame around 150–300 KB. */
const JPEG_QUALITY = "4";
/** A killed FFmpeg gets this long to go before SIGKILL, ms. */
const KILL_GRACE_MS = 500;

/** FFmpeg's arguments for one snapshot (pure, tested on its own). */
export function snapshotArgs(frames: number, width?: number): string[] {
  const filters = [`select='gte(n\\,${Math.max(0, frames - 1)})'`];
  // -2: the height that keeps the aspect ratio, rounded to even; min(): never larger than the source.
  if (width !== undefined) filters.push(`scale=w='min(${width}\\,iw)':h=-2`);
  return [
    // One thread: a snapshot must not take the cores the node's cameras stream on.
    ...["-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1"],
    ...["-f", "h264", "-i", "pipe:0"],
    ...["-vf", filters.join(","), "-frames:v", "1", "-fps_mode", "passthrough"],
    ...["-c:v", "mjpeg", "-q:v", JPEG_QUALITY, "-f", "image2pipe", "pipe:1"],
  ];
}

/** Runs the decode; UNAVAILABLE when FFmpeg fails, outputs nothing, or misses the deadline. */
export const decodeSnapshot: DecodeSnapshot = async (o) => {
  const run = superviseSpawn(o.ffmpegPath ?? "ffmpeg", snapshotArgs(o.frames, o.width), { stdio: ["pipe", "pipe"], tailLines: 5 });
  const chunks: Buffer[] = [];
  run.child.stdout?.on("data", (chunk: Buffer) => chunks.push(chunk));
  const stdoutDone = new Promise<void>((resolve) => {
    if (run.child.stdout === null) resolve();
    else run.child.stdout.once("close", () => resolve());
  });
  // FFmpeg may stop reading early (it has its one frame): that is EPIPE here, not a failure.
  run.child.stdin?.on("error", () => {});
  run.child.stdin?.end(o.annexB);
  const abort = () => void run.kill();
  o.signal?.addEventListener("abort", abort, { once: true });
  try {
    const exit = await withTimeout(run.exited, o.deadlineMs);
    if (exit === timedOut) {
      await run.terminate(KILL_GRACE_MS);
      throw new CamfleetError("UNAVAILABLE", `decoding the snapshot took longer than ${o.deadlineMs} ms`);
    }
    await withTimeout(stdoutDone, KILL_GRACE_MS);
    if (o.signal?.aborted) throw new CamfleetError("UNAVAILABLE", "the camera stopped while its snapshot was decoded");
    const jpeg = Buffer.concat(chunks);
    if (run.spawnError !== undefined) throw new CamfleetError("UNAVAILABLE", `could not start ffmpeg for the snapshot: ${run.spawnError.message}`);
    if (exit.code !== 0 || jpeg.length === 0) {
      const tail = run.stderrTail().split("\n").filter((l) => l.trim() !== "").slice(-2).join(" | ");
      throw new CamfleetError("UNAVAILABLE", `could not decode the latest frame (ffmpeg exit ${exit.code ?? exit.signal}${tail !== "" ? `: ${tail}` : ""})`);
    }
    return jpeg;
  } finally {
    o.signal?.removeEventListener("abort", abort);
    // Whatever happened above, no FFmpeg outlives the request.
    if (!run.hasExited()) await run.kill();
  }
};
