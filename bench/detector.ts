// The object detector (person_detection / object_detection): frames per
// second, latency per frame (p50, p99) and CPU per frame at 320 px and
// 640 px input, and what one node can analyse at ai.max_fps 1 and 5, next
// to the motion-only reference detector measured in the same run.
//
// Frames are real: OpenCV's pedestrian clip vtest.avi (Debian's opencv-doc),
// decoded by FFmpeg to rgb24 at each width, fed one at a time (as a node
// does per camera) straight to the detectors, without gRPC. CPU is the
// process's user+system time (all threads) over the frames.
//
// Cameras a node can analyse = frames per second of the detector / max_fps
// (every sampled frame sent: the motion gate off, its worst case).
// BENCH_FRAMES (default 20) per width. On 2 shared cores the figures are noisy.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { ObjectDetector, ReferenceDetector, type DetectorFrame, type DetectRequest } from "../proto/index.ts";

const CLIP = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const FRAMES = Number(process.env.BENCH_FRAMES ?? 20);
if (!existsSync(CLIP)) throw new Error(`${CLIP} is missing: run scripts/setup.sh (Debian package opencv-doc)`);

function clipFrames(width: number, count: number): DetectorFrame[] {
  // One frame a second of the clip: different people in each.
  const raw = execFileSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-i", CLIP, "-vf", `fps=1,scale=${width}:-2`, "-frames:v", String(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], { maxBuffer: 1 << 28 });
  const height = Math.round((576 * width) / 768 / 2) * 2;
  const size = width * height * 3;
  return Array.from({ length: raw.length / size }, (_, i) => ({ data: raw.subarray(i * size, (i + 1) * size), width, height, format: "rgb24" as const }));
}

interface Row {
  what: string;
  fps: number;
  p50: number;
  p99: number;
  cpuMs: number;
  boxes: number;
}

async function measure(what: string, frames: DetectorFrame[], run: (req: DetectRequest) => Promise<number>): Promise<Row> {
  const times: number[] = [];
  let boxes = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (const [i, frame] of frames.entries()) {
    const s = performance.now();
    boxes += await run({ frame, cameraId: "bench", frameId: i, captureTs: Date.now(), solutions: [] });
    times.push(performance.now() - s);
  }
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  times.sort((a, b) => a - b);
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  return { what, fps: (frames.length * 1000) / wall, p50: q(0.5), p99: q(0.99), cpuMs: (cpu.user + cpu.system) / 1000 / frames.length, boxes: boxes / frames.length };
}

const objects = new ObjectDetector();
const loadStart = performance.now();
await objects.start();
const loadMs = performance.now() - loadStart;
const rows: Row[] = [];
for (const width of [320, 640]) {
  const frames = clipFrames(width, FRAMES);
  const motion = new ReferenceDetector();
  rows.push(await measure(`motion ${width} px`, frames, async (r) => (await motion.detect({ ...r, solutions: ["motion"] })).detections.length));
  // One frame first: the model's first run at a new size compiles its kernels.
  await objects.detect({ frame: frames[0]!, cameraId: "warm", frameId: 0, captureTs: 0, solutions: [] }, ["person_detection"]);
  rows.push(await measure(`person_detection ${width} px`, frames, async (r) => (await objects.detect(r, ["person_detection"])).length));
}
await objects.close();

const f1 = (v: number) => v.toFixed(1);
console.log(`object model loaded in ${Math.round(loadMs)} ms; ${FRAMES} frames of vtest.avi per row; rss ${Math.round(process.memoryUsage().rss / 1e6)} MB at the end`);
console.log("| detector | frames/s | p50 ms | p99 ms | CPU ms/frame | boxes/frame | cameras at max_fps 1 | at max_fps 5 |");
console.log("|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(`| ${r.what} | ${f1(r.fps)} | ${f1(r.p50)} | ${f1(r.p99)} | ${f1(r.cpuMs)} | ${f1(r.boxes)} | ${f1(r.fps)} | ${f1(r.fps / 5)} |`);
}
