import type { Registry } from "prom-client";
import type { CameraError, CameraSpec, CameraStatus, DetectionEvent, StatusEvent } from "../../subjects/index.ts";
import type { Config } from "../config.ts";
import type { Logger } from "../logger.ts";

/**
 * What an actor kind gives the runtime, and what the runtime gives an actor.
 * The runtime knows kinds only through a KindRegistry filled by the entry
 * point; it never imports actors/.
 */

/** The part of a StatusEvent an actor fills in; the runtime stamps origin, epoch and time. */
export type StatusReport = Omit<StatusEvent, "type" | "camera" | "tenant" | "site" | "node" | "epoch" | "ts">;

/** The part of a DetectionEvent an actor fills in; the runtime stamps id, origin, epoch and time. */
export type DetectionReport = Omit<DetectionEvent, "type" | "id" | "camera" | "tenant" | "site" | "node" | "epoch" | "ts">;

/**
 * What became of a detection handed to the runtime: "queued" (it will reach
 * JetStream once NATS is there, exactly once), "fenced" (this node no longer
 * holds the lease: dropped), "overflow" (the node's publish buffer is full
 * while NATS is away: dropped and counted).
 */
export type DetectionOutcome = "queued" | "fenced" | "overflow";

export type StopReason = "released" | "disabled" | "deleted" | "lease-lost" | "restart" | "shutdown";

export interface ActorContext {
  readonly spec: CameraSpec;
  readonly node: string;
  /** Fencing token of the lease this actor runs under. */
  readonly epoch: number;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly config: Config;
  /** Interval of the periodic StatusEvent summary while running, ms (the contract: 5 s). */
  readonly summaryIntervalMs: number;
  /**
   * Publishes a StatusEvent. Dropped, never sent, once this node's lease on
   * the camera is no longer valid: a fenced actor cannot speak for the camera.
   */
  publishStatus(report: StatusReport): void;
  /**
   * Publishes a DetectionEvent asynchronously with a Nats-Msg-Id from
   * camera, epoch and frame, so a retry is never a duplicate. Same fencing
   * as publishStatus.
   */
  publishDetection(report: DetectionReport): DetectionOutcome;
  /** The actor reached a failure state it cannot leave by itself: the runtime restarts it with backoff. */
  fail(error: unknown): void;
  /**
   * The next frame id of this camera at this epoch. Ids never repeat within
   * an epoch, whatever restarts the analysis or the actor (the supervisor
   * restarts it under the same lease), so a DetectionEvent's Nats-Msg-Id
   * never collides with an earlier one's.
   */
  nextFrameId(): number;
  /**
   * Whether `origin` is the gateway that holds this camera's relay (as
   * camfleet_relays says): a WHIP redirect there may carry the API token.
   */
  trustsOrigin(origin: string): Promise<boolean>;
}

/** One gateway's count of a camera's viewers, as `camera.<id>.viewers` delivers it. */
export interface ViewerReport {
  gateway: string;
  viewers: number;
  /** The count holds this long unless the gateway sends it again, ms. */
  ttlMs: number;
}

export interface Actor {
  /** A changed spec of the same camera; the actor restarts only what changed. */
  update(spec: CameraSpec): void | Promise<void>;
  /** Stops, and resolves when every process and timer the actor owns is gone. */
  stop(reason: StopReason): Promise<void>;
  /** The live status, for `camera.<id>.status`. */
  status(): CameraStatus;
  /**
   * A gateway reports how many viewers the camera has there; returns the
   * total over all gateways. Optional: kinds without media ignore viewers.
   */
  viewers?(report: ViewerReport): number;
  /**
   * The latest frame as a JPEG, scaled to `width` pixels (aspect kept, never
   * upscaled), for `camera.<id>.snapshot`. Rejects with a CamfleetError:
   * UNAVAILABLE while there is no picture, INVALID_ARGUMENT for a bad width.
   * Optional: kinds without pictures leave it out (the runtime answers
   * UNSUPPORTED_MEDIA).
   */
  snapshot?(width?: number): Promise<Buffer>;
}

export interface ActorKind {
  readonly name: string;
  /** Starts an actor; a throw counts as a failure and is retried with backoff. */
  start(ctx: ActorContext): Promise<Actor>;
}

export class KindRegistry {
  readonly #kinds = new Map<string, ActorKind>();

  register(kind: ActorKind): this {
    if (this.#kinds.has(kind.name)) throw new Error(`actor kind "${kind.name}" is registered twice`);
    this.#kinds.set(kind.name, kind);
    return this;
  }

  get(name: string): ActorKind {
    const kind = this.#kinds.get(name);
    if (kind === undefined) throw new Error(`unknown actor kind "${name}"; known: ${this.names().join(", ") || "none"}`);
    return kind;
  }

  names(): string[] {
    return [...this.#kinds.keys()];
  }
}

/** A CameraError for a failure the runtime itself observed. */
export function runtimeError(code: CameraError["code"], detail: string, attempt: number, retryInMs: number): CameraError {
  return { code, detail, attempt, retry_in_ms: Math.max(0, Math.round(retryInMs)) };
}
