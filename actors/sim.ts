import type { CameraSpec, CameraState, CameraStatus } from "../subjects/index.ts";
import type { Actor, ActorContext, ActorKind, StopReason } from "../runtime/index.ts";

/**
 * A simulated camera: no FFmpeg, no network, just the status a camera would
 * report. Hundreds fit on one machine, so the runtime's placement, failover
 * and supervision can be tested and benchmarked at fleet scale.
 *
 * Behaviour is steered by spec labels:
 *   sim_connect_ms   time spent CONNECTING before STREAMING (default 0)
 *   sim_fail         "start": start() throws; "run": the actor fails after sim_fail_after_ms
 *   sim_fail_after_ms  default 200
 */
export const simKind: ActorKind = {
  name: "sim",
  async start(ctx: ActorContext): Promise<Actor> {
    if (ctx.spec.labels?.sim_fail === "start") throw new Error("simulated failure at start");
    return new SimActor(ctx);
  },
};

const SIM_STREAM = { codec: "h264", width: 1280, height: 720, fps: 25 } as const;

class SimActor implements Actor {
  #spec: CameraSpec;
  #state: CameraState = "CONNECTING";
  #since = Date.now();
  #frames = 0;
  #startedAt = Date.now();
  readonly #timers = new Set<NodeJS.Timeout>();

  constructor(private readonly ctx: ActorContext) {
    this.#spec = ctx.spec;
    this.#begin();
    const summary = setInterval(() => this.#report("periodic"), ctx.summaryIntervalMs);
    this.#timers.add(summary);
  }

  #begin(): void {
    this.#enter("CONNECTING");
    const connectMs = Number(this.#spec.labels?.sim_connect_ms ?? 0);
    this.#after(connectMs, () => {
      this.#startedAt = Date.now();
      this.#enter("STREAMING");
    });
    if (this.#spec.labels?.sim_fail === "run") {
      const failAfter = Number(this.#spec.labels.sim_fail_after_ms ?? 200);
      this.#after(failAfter, () => this.ctx.fail(new Error("simulated failure while running")));
    }
  }

  #after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  #enter(state: CameraState): void {
    this.#state = state;
    this.#since = Date.now();
    this.#report("edge");
  }

  /** Frames a real 25 fps camera would have delivered since STREAMING began. */
  #framesNow(): number {
    if (this.#state === "STREAMING") this.#frames = Math.floor(((Date.now() - this.#startedAt) / 1000) * SIM_STREAM.fps);
    return this.#frames;
  }

  #report(trigger: "edge" | "periodic"): void {
    const streaming = this.#state === "STREAMING";
    this.ctx.publishStatus({
      state: this.#state,
      trigger,
      ...(streaming ? { stream: { ...SIM_STREAM }, last_frame_ts: Date.now(), last_frame_age_s: 0 } : {}),
      publishing: false,
      viewers: 0,
    });
  }

  update(spec: CameraSpec): void {
    const restart = spec.url !== this.#spec.url || JSON.stringify(spec.labels) !== JSON.stringify(this.#spec.labels);
    this.#spec = spec;
    if (restart) {
      for (const t of this.#timers) clearTimeout(t);
      this.#timers.clear();
      this.#timers.add(setInterval(() => this.#report("periodic"), this.ctx.summaryIntervalMs));
      this.#begin();
    }
  }

  async stop(_reason: StopReason): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#enter("STOPPED");
  }

  status(): CameraStatus {
    return {
      camera: this.#spec.id,
      node: this.ctx.node,
      epoch: this.ctx.epoch,
      state: this.#state,
      since_ts: this.#since,
      ...(this.#state === "STREAMING" ? { stream: { ...SIM_STREAM }, last_frame_ts: Date.now() } : {}),
      frames: { received: this.#framesNow(), sent_ai: 0, skipped_motion: 0, detections: 0 },
      publishing: false,
      viewers: 0,
    };
  }
}
