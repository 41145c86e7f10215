import type { Registry } from "prom-client";
import { detectOptionsFor, DetectorClient, DetectorError, MotionGate, toGray, type DetectorClientTls, type DetectResult } from "../../proto/index.ts";
import { realClock, type Clock, type DetectionReport, type DetectionOutcome, type Logger, type Timer } from "../../runtime/index.ts";
import type { CameraError, CameraSpec } from "../../subjects/index.ts";
import type { AnalysisFrame } from "./ffmpeg-output.ts";
import { CameraMetrics } from "./metrics.ts";

/**
 * A camera's analysis path, fed with the sampled frames of its FFmpeg
 * (ffmpeg-args.ts samples at ai.max_fps or every ai.every_n frames):
 *
 *   frame → motion gate → one call in flight, newest frame waiting → Detect (deadline) → DetectionEvent
 *
 * - The gate (`ai.motion_gate`) compares each frame with the previous one,
 *   averaged down, against each cell's learned noise (proto/motion.ts); a
 *   frame without motion is counted in `skipped_motion` and never sent, but
 *   one passes at least once a minute: a still scene from a real camera
 *   costs the detector one frame a minute.
 * - At most one Detect call per camera is in flight; a frame arriving
 *   meanwhile waits, and a newer one replaces it (latest wins).
 * - Every call has the camera's `ai.timeout_ms` as its deadline.
 * - The detector being down or late makes the camera report
 *   DETECTOR_UNAVAILABLE (video goes on); ListSolutions is then tried every
 *   `probeIntervalMs` until it answers, and analysis resumes by itself.
 * - Solutions the detector does not offer are DETECTOR_UNSUPPORTED; the
 *   others are still analysed.
 */

/** What a camera asks for when its spec names no solution. */
export const DEFAULT_SOLUTIONS = ["motion"];

export interface AnalysisOptions {
  spec: CameraSpec;
  /** host:port of the detector (AI_ENDPOINT). */
  endpoint: string;
  /** TLS towards it (AI_TLS_CA, AI_TLS_CERT, AI_TLS_KEY); unset = cleartext. */
  tls?: DetectorClientTls;
  logger: Logger;
  registry: Registry;
  publish(report: DetectionReport): DetectionOutcome;
  /** Frame ids that never repeat within the camera's epoch (ActorContext.nextFrameId). Default: a counter of this analysis, from 0. */
  nextFrameId?: () => number;
  /** The analysis error changed (a new code, or cleared). */
  onErrorChange(error: CameraError | undefined): void;
  /** Between ListSolutions attempts while the detector is away, ms. Default 1000. */
  probeIntervalMs?: number;
  /** Time for the probe timer, the motion gate's heartbeat and the refusal log's rate limit (not the latency metrics, which are real). Default: the real clock. */
  clock?: Clock;
}

interface Waiting {
  frame: AnalysisFrame;
  frameId: number;
  /** performance.now() when the frame arrived: e2e latency on the same clock as inference. */
  arrived: number;
  motionScore?: number;
}

export class Analysis {
  readonly #o: AnalysisOptions;
  readonly #camera: string;
  readonly #wanted: string[];
  readonly #client: DetectorClient;
  readonly #gate = new MotionGate();
  readonly #metrics: CameraMetrics;
  readonly #abort = new AbortController();
  #nextFrameId = 0;
  /** Solutions to request: wanted ∩ offered; undefined until the detector has said what it offers. */
  #active?: string[];
  #unsupported: string[] = [];
  #waiting?: Waiting;
  #inFlight?: Promise<void>;
  #probeTimer?: Timer;
  #probing = false;
  #error?: CameraError;
  #failures = 0;
  #stopped = false;
  /** -Infinity: the first refusal is logged, however soon after the clock's origin. */
  #lastRefusalLog = -Infinity;
  readonly counts = { sent_ai: 0, skipped_motion: 0, detections: 0, dropped_events: 0 };
  #inferenceTotalMs = 0;

  readonly #clock: Clock;

  constructor(options: AnalysisOptions) {
    this.#o = options;
    this.#clock = options.clock ?? realClock;
    this.#camera = options.spec.id;
    this.#wanted = options.spec.solutions.length > 0 ? [...options.spec.solutions] : DEFAULT_SOLUTIONS;
    this.#metrics = CameraMetrics.of(options.registry);
    this.#client = new DetectorClient({ endpoint: options.endpoint, ...(options.tls !== undefined ? { tls: options.tls } : {}) });
    void this.#probe();
  }

  get error(): CameraError | undefined {
    return this.#error;
  }

  /** Mean round trip of the Detect calls so far, ms. */
  get avgInferenceMs(): number | undefined {
    return this.counts.sent_ai > 0 && this.#inferenceTotalMs > 0 ? Math.round((this.#inferenceTotalMs / this.counts.sent_ai) * 100) / 100 : undefined;
  }

  onFrame(frame: AnalysisFrame): void {
    if (this.#stopped) return;
    const arrived = performance.now();
    const frameId = this.#o.nextFrameId !== undefined ? this.#o.nextFrameId() : this.#nextFrameId++;
    let motionScore: number | undefined;
    if (this.#o.spec.ai.motion_gate) {
      const gate = this.#gate.check(toGray(frame.data, frame.width, frame.height, frame.pixFmt === "gray" ? 1 : 3), this.#clock.now());
      if (!gate.pass) {
        this.counts.skipped_motion++;
        this.#metrics.skipped.inc({ camera: this.#camera });
        return;
      }
      motionScore = Math.round(gate.score * 10_000) / 10_000;
    }
    // Nothing to ask while the detector is away or offers none of what we want.
    if (this.#active === undefined || this.#active.length === 0) return;
    this.#waiting = { frame, frameId, arrived, ...(motionScore !== undefined ? { motionScore } : {}) };
    if (this.#inFlight === undefined) this.#inFlight = this.#drain();
  }

  /** Sends waiting frames one at a time until none waits. */
  async #drain(): Promise<void> {
    try {
      while (this.#waiting !== undefined && !this.#stopped && this.#active !== undefined && this.#active.length > 0) {
        const next = this.#waiting;
        this.#waiting = undefined;
        await this.#detect(next, this.#active);
      }
    } finally {
      this.#inFlight = undefined;
    }
  }

  async #detect(w: Waiting, solutions: string[]): Promise<void> {
    const { frame } = w;
    this.counts.sent_ai++;
    const started = performance.now();
    // The camera's min_score / labels / nms_iou, for the model solutions.
    const options = detectOptionsFor(this.#o.spec.ai);
    let result: DetectResult;
    try {
      result = await this.#client.detect(
        {
          frame: { data: frame.data, width: frame.width, height: frame.height, format: frame.pixFmt },
          cameraId: this.#camera,
          frameId: w.frameId,
          captureTs: frame.ts,
          solutions,
          ...(options !== undefined ? { options } : {}),
        },
        { deadlineMs: this.#o.spec.ai.timeout_ms, signal: this.#abort.signal },
      );
    } catch (err) {
      if (!this.#stopped) this.#failed(err);
      return;
    }
    const inferenceMs = performance.now() - started;
    this.#inferenceTotalMs += inferenceMs;
    this.#metrics.inference.observe({ camera: this.#camera }, inferenceMs / 1000);
    this.#failures = 0;
    if (this.#stopped) return;
    // A success ends an outage or a refusal; an unsupported solution stays reported.
    if (this.#error !== undefined && this.#error.code !== "DETECTOR_UNSUPPORTED") this.#setError(this.#unsupportedError());
    if (result.detections.length === 0) return;

    const motion = w.motionScore ?? result.motionScore;
    const e2eMs = round1(performance.now() - w.arrived);
    const outcome = this.#o.publish({
      frame_id: w.frameId,
      frame_ts: frame.ts,
      solutions,
      detections: result.detections.map((d) => ({ label: d.label, score: d.score, box: d.box })),
      ...(motion !== undefined ? { motion: { score: motion } } : {}),
      latency: { inference_ms: round1(inferenceMs), e2e_ms: e2eMs },
    });
    if (outcome === "queued") {
      this.counts.detections++;
      this.#metrics.published.inc({ camera: this.#camera });
      this.#metrics.e2e.observe({ camera: this.#camera }, e2eMs / 1000);
    } else if (outcome === "overflow") {
      this.counts.dropped_events++;
    }
  }

  #failed(err: unknown): void {
    const e = err instanceof DetectorError ? err : new DetectorError("FAILED", err instanceof Error ? err.message : String(err));
    this.#failures++;
    if (e.unavailable) {
      // Stop sending; the probe finds out when it is back.
      this.#active = undefined;
      this.#waiting = undefined;
      this.#gate.reset();
      this.#setError({ code: "DETECTOR_UNAVAILABLE", detail: e.message, attempt: this.#failures, retry_in_ms: this.#probeMs() });
      this.#scheduleProbe();
    } else if (e.code === "UNIMPLEMENTED") {
      // The detector changed under us (another model): ask again what it offers.
      this.#active = undefined;
      this.#scheduleProbe(0);
    } else {
      // A refused frame or a garbled answer: this frame is lost, the next one is tried.
      const now = this.#clock.now();
      if (now - this.#lastRefusalLog > 10_000) {
        this.#lastRefusalLog = now;
        this.#o.logger.warn({ code: e.code, detail: e.message }, "detector call failed; camera goes on");
      }
      this.#setError({ code: "DETECTOR_FAILED", detail: e.message, attempt: this.#failures, retry_in_ms: 0 });
    }
  }

  #probeMs(): number {
    return this.#o.probeIntervalMs ?? 1000;
  }

  #scheduleProbe(delayMs = this.#probeMs()): void {
    if (this.#stopped || this.#probeTimer !== undefined || this.#probing) return;
    this.#probeTimer = this.#clock.setTimeout(() => {
      this.#probeTimer = undefined;
      void this.#probe();
    }, delayMs);
  }

  /** Asks the detector what it offers; on success analysis (re)starts, on failure it is tried again later. */
  async #probe(): Promise<void> {
    if (this.#stopped || this.#probing) return;
    this.#probing = true;
    try {
      const list = await this.#client.listSolutions({ deadlineMs: this.#o.spec.ai.timeout_ms, signal: this.#abort.signal });
      if (this.#stopped) return;
      this.#active = this.#wanted.filter((s) => list.solutions.includes(s));
      this.#unsupported = this.#wanted.filter((s) => !list.solutions.includes(s));
      this.#failures = 0;
      if (this.#error?.code === "DETECTOR_UNAVAILABLE") this.#o.logger.info({ endpoint: this.#client.endpoint }, "detector reachable again");
      this.#o.logger.debug({ offered: list.solutions, model: list.model, active: this.#active }, "detector solutions");
      this.#setError(this.#unsupportedError());
    } catch (err) {
      if (this.#stopped) return;
      const e = err instanceof DetectorError ? err : new DetectorError("FAILED", String(err));
      this.#failures++;
      this.#setError({ code: "DETECTOR_UNAVAILABLE", detail: e.message, attempt: this.#failures, retry_in_ms: this.#probeMs() });
    } finally {
      this.#probing = false;
    }
    if (this.#active === undefined) this.#scheduleProbe();
  }

  #unsupportedError(): CameraError | undefined {
    if (this.#unsupported.length === 0) return undefined;
    return {
      code: "DETECTOR_UNSUPPORTED",
      detail: `the detector at ${this.#client.endpoint} does not offer ${this.#unsupported.map((s) => `"${s}"`).join(", ")}` +
        (this.#active !== undefined && this.#active.length > 0 ? `; analysing ${this.#active.join(", ")}` : "; nothing to analyse"),
      attempt: 0,
      retry_in_ms: 0,
    };
  }

  /** Keeps the error and tells the actor when its code (or presence) changed; attempts alone are no news. */
  #setError(error: CameraError | undefined): void {
    const before = this.#error;
    this.#error = error;
    if (before?.code !== error?.code) {
      if (error !== undefined && error.code === "DETECTOR_UNAVAILABLE") this.#o.logger.warn({ detail: error.detail }, "detector unavailable; video goes on");
      this.#o.onErrorChange(error);
    }
  }

  /** Cancels the call in flight and the probes; resolves when nothing of this analysis runs any more. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#clock.clearTimeout(this.#probeTimer);
    this.#waiting = undefined;
    this.#abort.abort();
    await this.#inFlight;
    this.#client.close();
  }
}

function round1(v: number): number {
  return Math.round(v * 10) / 10;
}
