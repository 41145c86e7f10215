import { CamfleetError, type CameraSpec, type CameraStatus } from "../../subjects/index.ts";
import type { Actor, ActorContext, ActorKind, StatusReport, StopReason, ViewerReport } from "./kinds.ts";
import { runtimeError } from "./kinds.ts";
import { backoffDelay, type Backoff } from "../backoff.ts";
import { realClock, type Clock, type Timer } from "../clock.ts";
import type { Logger } from "../logger.ts";

/** Restart backoff of an actor: the runtime's one formula, plus when a long run forgives earlier failures. */
export interface BackoffPolicy extends Backoff {
  /** Running this long without failing resets the attempt count, ms. Default 60000. */
  resetAfterMs: number;
}

/** 0.5 s doubling to 30 s, equal jitter; reset after a minute of running. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000, resetAfterMs: 60_000 };

export interface SlotOptions {
  kind: ActorKind;
  spec: CameraSpec;
  epoch: number;
  node: string;
  logger: Logger;
  backoff?: BackoffPolicy;
  /** Builds the context of one incarnation of the actor. */
  context(spec: CameraSpec, fail: (err: unknown) => void): ActorContext;
  /** Publishes a status the supervisor itself reports (a failure and its retry). */
  report(report: StatusReport): void;
  /** Called on each restart, for metrics. */
  onRestart?(attempt: number): void;
  clock?: Clock;
}

/**
 * Supervises the actor of one owned camera: starts it, restarts it with
 * backoff when it throws or fails, and stops it for good on request. One bad
 * actor never takes the node down: every failure ends here.
 */
export class ActorSlot {
  #spec: CameraSpec;
  #actor?: Actor;
  #generation = 0;
  #attempt = 0;
  /** When the current incarnation started (monotonic); undefined before the first did. */
  #startedAt: number | undefined;
  #retryTimer?: Timer;
  #stopped = false;
  #stopping?: Promise<void>;
  /** `retryAt` on the monotonic clock. */
  #lastError?: { detail: string; retryAt: number };
  readonly #clock: Clock;
  readonly #since: number;

  constructor(private readonly options: SlotOptions) {
    this.#spec = options.spec;
    this.#clock = options.clock ?? realClock;
    this.#since = this.#clock.wallNow();
  }

  get spec(): CameraSpec {
    return this.#spec;
  }

  get epoch(): number {
    return this.options.epoch;
  }

  start(): void {
    void this.#run();
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    const generation = ++this.#generation;
    const fail = (err: unknown) => {
      if (generation === this.#generation) void this.#failed(err);
    };
    try {
      const actor = await this.options.kind.start(this.options.context(this.#spec, fail));
      if (this.#stopped || generation !== this.#generation) {
        await actor.stop("shutdown");
        return;
      }
      this.#actor = actor;
      this.#startedAt = this.#clock.now();
      this.#lastError = undefined;
    } catch (err) {
      fail(err);
    }
  }

  async #failed(err: unknown): Promise<void> {
    if (this.#stopped) return;
    this.#generation++; // late failures of this incarnation are ignored
    const actor = this.#actor;
    this.#actor = undefined;
    if (actor !== undefined) {
      await actor.stop("restart").catch((stopErr: unknown) => this.options.logger.warn({ err: stopErr }, "stopping a failed actor failed"));
    }
    const policy = this.options.backoff ?? DEFAULT_BACKOFF;
    if (this.#startedAt !== undefined && this.#clock.now() - this.#startedAt >= policy.resetAfterMs) this.#attempt = 0;
    this.#attempt++;
    const delay = backoffDelay(policy, this.#attempt);
    const detail = err instanceof Error ? err.message : String(err);
    this.#lastError = { detail, retryAt: this.#clock.now() + delay };
    this.options.logger.warn({ err, attempt: this.#attempt, retryInMs: Math.round(delay) }, "actor failed; restarting with backoff");
    this.options.onRestart?.(this.#attempt);
    this.options.report({ state: "ERROR", trigger: "edge", error: runtimeError("ACTOR_FAILED", detail, this.#attempt, delay) });
    if (this.#stopped) return;
    this.#retryTimer = this.#clock.setTimeout(() => void this.#run(), delay);
  }

  /** Applies a changed spec: the actor decides what to restart. */
  async update(spec: CameraSpec): Promise<void> {
    this.#spec = spec;
    const actor = this.#actor;
    if (actor === undefined) return; // the next (re)start uses the new spec
    try {
      await actor.update(spec);
    } catch (err) {
      void this.#failed(err);
    }
  }

  /** Stops the actor for good; resolves when it is gone. Every call waits for the same stop. */
  stop(reason: StopReason): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopped = true;
      this.#generation++;
      this.#clock.clearTimeout(this.#retryTimer);
      const actor = this.#actor;
      this.#actor = undefined;
      if (actor !== undefined) {
        await actor.stop(reason).catch((err: unknown) => this.options.logger.warn({ err, reason }, "stopping the actor failed"));
      }
    })();
    return this.#stopping;
  }

  /** Passes a gateway's viewer count to the actor; 0 while no actor runs or its kind ignores viewers. */
  viewers(report: ViewerReport): number {
    return this.#actor?.viewers?.(report) ?? 0;
  }

  /** The actor's snapshot; UNAVAILABLE while no actor runs, UNSUPPORTED_MEDIA for a kind without pictures. */
  snapshot(width?: number): Promise<Buffer> {
    const actor = this.#actor;
    if (actor === undefined) return Promise.reject(new CamfleetError("UNAVAILABLE", `camera ${this.#spec.id} has no picture yet: its actor is starting`));
    if (actor.snapshot === undefined) {
      return Promise.reject(new CamfleetError("UNSUPPORTED_MEDIA", `camera ${this.#spec.id} runs as a "${this.options.kind.name}" actor, which has no pictures`));
    }
    return actor.snapshot(width);
  }

  status(): CameraStatus {
    if (this.#actor !== undefined) return this.#actor.status();
    // Not running right now: starting, or waiting to restart.
    const base: CameraStatus = {
      camera: this.#spec.id,
      node: this.options.node,
      epoch: this.options.epoch,
      state: this.#lastError === undefined ? "CONNECTING" : "ERROR",
      since_ts: this.#since,
      frames: { received: 0, sent_ai: 0, skipped_motion: 0, detections: 0 },
      publishing: false,
      viewers: 0,
    };
    if (this.#lastError !== undefined) {
      base.error = runtimeError("ACTOR_FAILED", this.#lastError.detail, this.#attempt, this.#lastError.retryAt - this.#clock.now());
    }
    return base;
  }
}
