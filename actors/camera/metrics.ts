import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { perRegistry } from "../../runtime/index.ts";
import type { CameraErrorCode } from "../../subjects/index.ts";

/**
 * The per-camera metrics of the contract (docs/contract.md, "Metrics"), in
 * one place, registered once per registry. Every series of a camera exists
 * from the moment its actor starts on this node (counters at 0, so `rate()`
 * and `increase()` see the first event), and all of them go when the actor
 * stops here: after a failover the old node shows no stale camera.
 *
 * Analysis metrics live here too, not in analysis.ts: that module (and gRPC
 * with it) loads only when a camera turns AI on, but a camera without AI
 * still has its `camfleet_detections_published_total 0`.
 */

/**
 * The codes of `camfleet_stream_errors_total` each camera starts with at 0:
 * every code the camera actor itself counts. LEASE_LOST and ACTOR_FAILED are
 * the runtime's, reported in status events, not counted here.
 */
export const COUNTED_ERROR_CODES: readonly CameraErrorCode[] = [
  "SOURCE_UNREACHABLE",
  "SOURCE_AUTH",
  "SOURCE_NOT_ALLOWED",
  "STREAM_STALLED",
  "UNSUPPORTED_CODEC",
  "FFMPEG_EXITED",
  "WHIP_FAILED",
  "DETECTOR_UNAVAILABLE",
  "DETECTOR_UNSUPPORTED",
  "DETECTOR_FAILED",
];

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

interface Live {
  /** The actor that registered the camera: a late forget() of an older actor of the same camera changes nothing. */
  owner: object;
  /** Seconds since the camera's last frame (or since it started here, before the first), at scrape time. */
  lastFrameAge(): number;
  /** Codes counted beyond COUNTED_ERROR_CODES, so forget() removes their series too. */
  extraCodes: Set<string>;
}

export class CameraMetrics {
  readonly up: Gauge<"camera">;
  readonly lastFrameAge: Gauge<"camera">;
  readonly fps: Gauge<"camera">;
  readonly errors: Counter<"camera" | "code">;
  readonly inference: Histogram<"camera">;
  readonly e2e: Histogram<"camera">;
  readonly published: Counter<"camera">;
  readonly skipped: Counter<"camera">;
  /** FFmpeg decodes run for snapshots on this node (requests that shared a decode count once). */
  readonly snapshotDecodes: Counter;
  readonly #live = new Map<string, Live>();

  private constructor(registry: Registry) {
    const registers = [registry];
    const live = this.#live;
    this.up = new Gauge({ name: "camfleet_stream_up", help: "1 while the camera is STREAMING", labelNames: ["camera"], registers });
    this.lastFrameAge = new Gauge({
      name: "camfleet_last_frame_age_seconds",
      help: "Seconds since the last frame from the source (before the first: since the camera started on this node), as of the scrape",
      labelNames: ["camera"],
      registers,
      collect() {
        for (const [camera, l] of live) this.set({ camera }, Math.round(l.lastFrameAge() * 1000) / 1000);
      },
    });
    this.fps = new Gauge({ name: "camfleet_stream_fps", help: "Frame rate the source announces (0 until it is known)", labelNames: ["camera"], registers });
    this.errors = new Counter({ name: "camfleet_stream_errors_total", help: "Camera errors by code", labelNames: ["camera", "code"], registers });
    this.inference = new Histogram({
      name: "camfleet_inference_latency_seconds",
      help: "Round trip of one Detect call, seen from the node",
      labelNames: ["camera"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.e2e = new Histogram({
      name: "camfleet_e2e_latency_seconds",
      help: "From a frame's arrival at the node to its DetectionEvent being handed to JetStream",
      labelNames: ["camera"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.published = new Counter({ name: "camfleet_detections_published_total", help: "DetectionEvents queued for JetStream", labelNames: ["camera"], registers });
    this.skipped = new Counter({ name: "camfleet_frames_skipped_motion_total", help: "Sampled frames the motion gate kept from the detector", labelNames: ["camera"], registers });
    this.snapshotDecodes = new Counter({ name: "camfleet_snapshot_decodes_total", help: "FFmpeg decodes run for snapshots (concurrent requests for one camera and width share one)", registers });
  }

  static readonly of = perRegistry((registry) => new CameraMetrics(registry));

  /** Every series of `camera` at its starting value; `owner` is the actor, for forget(). */
  start(camera: string, owner: object, lastFrameAge: () => number): void {
    this.#live.set(camera, { owner, lastFrameAge, extraCodes: new Set() });
    const labels = { camera };
    this.up.set(labels, 0);
    this.fps.set(labels, 0);
    for (const code of COUNTED_ERROR_CODES) this.errors.inc({ camera, code }, 0);
    this.inference.zero(labels);
    this.e2e.zero(labels);
    this.published.inc(labels, 0);
    this.skipped.inc(labels, 0);
  }

  /** Counts one error of the camera. */
  countError(camera: string, code: string): void {
    if (!(COUNTED_ERROR_CODES as readonly string[]).includes(code)) this.#live.get(camera)?.extraCodes.add(code);
    this.errors.inc({ camera, code });
  }

  /** Removes every series of `camera`, unless a newer actor of it has started since. */
  forget(camera: string, owner: object): void {
    const live = this.#live.get(camera);
    if (live?.owner !== owner) return;
    this.#live.delete(camera);
    const labels = { camera };
    for (const metric of [this.up, this.lastFrameAge, this.fps, this.inference, this.e2e, this.published, this.skipped]) metric.remove(labels);
    for (const code of [...COUNTED_ERROR_CODES, ...live.extraCodes]) this.errors.remove({ camera, code });
  }
}
