import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { DetectorError, type DetectedObject, type DetectOptions, type DetectRequest, type FrameFormat } from "./contract.ts";

/**
 * Solutions `person_detection` and `object_detection`: a pretrained COCO
 * detector (MB3-CenterNet, 80 classes) that ships inside the npm package
 * @vladmandic/human, run on TensorFlow.js's WebAssembly backend in a worker
 * thread (object-worker.ts). One frame costs ~0.5 s of CPU on this class of
 * machine, so the model must never run on the event loop that renews leases.
 *
 * Frames are analysed one at a time in arrival order; at most `maxQueue`
 * wait, and a frame beyond that is refused as UNAVAILABLE (overloaded), which
 * the node treats like a late answer. If the thread dies, the frames in it
 * fail as UNAVAILABLE and the next frame starts a new thread.
 */

export const PERSON_SOLUTION = "person_detection";
export const OBJECT_SOLUTION = "object_detection";
export const OBJECT_SOLUTIONS: readonly string[] = [PERSON_SOLUTION, OBJECT_SOLUTION];
export const OBJECT_MODEL = "mb3-centernet/human-3.3";

export interface ObjectDetectorOptions {
  /** Score below which a box is dropped, 0..1, when the request does not say. Default 0.3. */
  minScore?: number;
  /** Non-maximum suppression: boxes overlapping a better one by more than this IoU are dropped, when the request does not say. Default 0.4. */
  iou?: number;
  /** Boxes per frame at most, best first. Default 32. */
  maxDetected?: number;
  /** Frames waiting for the thread at most; more are refused as UNAVAILABLE. Default 4. */
  maxQueue?: number;
  /** Largest JPEG accepted, megapixels. Default 40. */
  maxJpegMegapixels?: number;
}

/** Per-request tuning (a camera's ai.min_score, ai.labels, ai.nms_iou). */
export interface ObjectQuery {
  minScore?: number;
  iou?: number;
  /** object_detection reports only these classes; person_detection always reports person. */
  labels?: string[];
}

// ------------------------------------------------ messages to and from object-worker.ts

/** workerData of the thread. */
export interface WorkerSetup {
  minScore: number;
  iou: number;
  maxDetected: number;
  maxJpegMegapixels: number;
}
export interface WorkerRequest {
  id: number;
  data: ArrayBuffer;
  width: number;
  height: number;
  format: FrameFormat;
  minScore: number;
  iou: number;
}
export type WorkerReply =
  | { type: "ready"; backend: string }
  | { type: "failed"; error: string }
  | { type: "result"; id: number; objects?: { label: string; score: number; box: [number, number, number, number] }[]; ms?: number; error?: string; invalid?: string };

interface Pending {
  resolve(objects: { label: string; score: number; box: [number, number, number, number] }[]): void;
  reject(err: DetectorError): void;
}

/**
 * The worker thread: its compiled .js in dist/; under tsx or vitest its
 * TypeScript source, through a two-line bootstrap that registers
 * tsx's loader inside the thread first (Node 20 does not carry a parent's
 * --import loader into worker threads).
 */
function spawnWorker(workerData: WorkerSetup): Worker {
  if (import.meta.url.endsWith(".js")) return new Worker(new URL("./object-worker.js", import.meta.url), { workerData });
  // tsx's ESM API (its "import" build, next to the "require" one that resolve() finds).
  const tsxApi = pathToFileURL(createRequire(import.meta.url).resolve("tsx/esm/api").replace(/\.cjs$/, ".mjs")).href;
  const source = new URL("./object-worker.ts", import.meta.url).href;
  const boot = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(source)}); });`;
  return new Worker(boot, { eval: true, workerData });
}

export class ObjectDetector {
  readonly #opts: Required<ObjectDetectorOptions>;
  #worker?: Worker;
  #ready?: Promise<void>;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;

  constructor(options: ObjectDetectorOptions = {}) {
    this.#opts = { minScore: 0.3, iou: 0.4, maxDetected: 32, maxQueue: 4, maxJpegMegapixels: 40, ...options };
    for (const [name, v] of [["minScore", this.#opts.minScore], ["iou", this.#opts.iou]] as const) {
      if (!(v >= 0 && v <= 1)) throw new RangeError(`ObjectDetectorOptions.${name} must be in 0..1, got ${v}`);
    }
  }

  /** Starts the thread and loads the model (about a second); detect() waits for it too. */
  start(): Promise<void> {
    if (this.#closed) return Promise.reject(new DetectorError("UNAVAILABLE", "the object detector is closed"));
    if (this.#ready !== undefined) return this.#ready;
    const worker = spawnWorker({ minScore: this.#opts.minScore, iou: this.#opts.iou, maxDetected: this.#opts.maxDetected, maxJpegMegapixels: this.#opts.maxJpegMegapixels });
    this.#worker = worker;
    this.#ready = new Promise<void>((resolve, reject) => {
      worker.on("message", (msg: WorkerReply) => {
        if (msg.type === "ready") resolve();
        else if (msg.type === "failed") reject(new DetectorError("UNAVAILABLE", `the object model did not load: ${msg.error}`));
        else this.#settle(msg);
      });
      const gone = (why: string) => {
        if (this.#worker === worker) {
          this.#worker = undefined;
          this.#ready = undefined;
        }
        const err = new DetectorError("UNAVAILABLE", why);
        reject(err);
        for (const p of this.#pending.values()) p.reject(err);
        this.#pending.clear();
      };
      worker.on("error", (err) => gone(`the object model's thread failed: ${err.message}`));
      worker.on("exit", (code) => gone(`the object model's thread exited (${code})`));
    });
    // A load failure is reported to the caller of detect(); this catch only keeps it from being unhandled.
    this.#ready.catch(() => {});
    return this.#ready;
  }

  /** Frames accepted and not answered yet (in the thread or waiting for it). */
  get queued(): number {
    return this.#pending.size;
  }

  /**
   * Runs the model on one frame for `solutions` (a subset of OBJECT_SOLUTIONS):
   * boxes normalised and clipped to the frame, best first.
   */
  async detect(request: DetectRequest, solutions: readonly string[], query: ObjectQuery = {}): Promise<DetectedObject[]> {
    if (this.#pending.size >= this.#opts.maxQueue) {
      throw new DetectorError("UNAVAILABLE", `the object detector is overloaded: ${this.#pending.size} frames are waiting`);
    }
    const ready = this.start();
    const id = this.#nextId++;
    // Copied: the thread takes the bytes, and grpc's buffer may be a view of a larger one.
    const data = new Uint8Array(request.frame.data).buffer;
    const raw = await new Promise<{ label: string; score: number; box: [number, number, number, number] }[]>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      ready.then(
        () => {
          const msg: WorkerRequest = {
            id,
            data,
            width: request.frame.width,
            height: request.frame.height,
            format: request.frame.format,
            minScore: query.minScore ?? this.#opts.minScore,
            iou: query.iou ?? this.#opts.iou,
          };
          this.#worker?.postMessage(msg, [data]);
        },
        (err: DetectorError) => {
          this.#pending.delete(id);
          reject(err);
        },
      );
    });
    const person = solutions.includes(PERSON_SOLUTION);
    const all = solutions.includes(OBJECT_SOLUTION);
    const labels = query.labels !== undefined && query.labels.length > 0 ? new Set(query.labels) : undefined;
    const out: DetectedObject[] = [];
    for (const o of raw) {
      // A person counts once: under person_detection when asked for, else under object_detection.
      const solution = o.label === "person" && person ? PERSON_SOLUTION : all && (labels === undefined || labels.has(o.label)) ? OBJECT_SOLUTION : undefined;
      if (solution === undefined) continue;
      const box = clipBox(o.box);
      if (box === undefined) continue;
      out.push({ label: o.label, score: round(Math.min(1, Math.max(0, o.score))), box, solution });
    }
    return out.sort((a, b) => b.score - a.score);
  }

  /** Ends the thread; frames in it fail as UNAVAILABLE. */
  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#worker = undefined;
    this.#ready = undefined;
    if (worker !== undefined) await worker.terminate();
  }

  #settle(msg: Extract<WorkerReply, { type: "result" }>): void {
    const p = this.#pending.get(msg.id);
    if (p === undefined) return;
    this.#pending.delete(msg.id);
    if (msg.invalid !== undefined) p.reject(new DetectorError("INVALID_ARGUMENT", msg.invalid));
    else if (msg.error !== undefined || msg.objects === undefined) p.reject(new DetectorError("FAILED", `the object model failed: ${msg.error ?? "no result"}`));
    else p.resolve(msg.objects);
  }
}

/**
 * The model's boxes may reach a little past the frame (CenterNet predicts a
 * centre and a size): clipped to 0..1 as the contract requires; a box with
 * nothing left inside is dropped.
 */
function clipBox([x, y, w, h]: [number, number, number, number]): DetectedObject["box"] | undefined {
  const x0 = Math.max(0, Math.min(1, x));
  const y0 = Math.max(0, Math.min(1, y));
  const x1 = Math.max(0, Math.min(1, x + w));
  const y1 = Math.max(0, Math.min(1, y + h));
  const box = { x: round(x0), y: round(y0), w: round(x1 - x0), h: round(y1 - y0) };
  // Rounding must not push the far edge past 1.
  if (box.x + box.w > 1) box.w = round(1 - box.x);
  if (box.y + box.h > 1) box.h = round(1 - box.y);
  return box.w > 0 && box.h > 0 ? box : undefined;
}

function round(v: number): number {
  return Math.floor(v * 1000 + 0.5) / 1000;
}

/**
 * A camera's ai settings as the DetectOptions each frame carries (for the
 * node's analysis path): unset settings are left out, so the detector's
 * defaults apply.
 */
export function detectOptionsFor(ai: { min_score?: number; labels?: string[]; nms_iou?: number }): DetectOptions | undefined {
  const options: DetectOptions = {
    ...(ai.min_score !== undefined ? { minScore: ai.min_score } : {}),
    ...(ai.labels !== undefined && ai.labels.length > 0 ? { labels: ai.labels } : {}),
    ...(ai.nms_iou !== undefined ? { nmsIou: ai.nms_iou } : {}),
  };
  return Object.keys(options).length > 0 ? options : undefined;
}
