import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../runtime/index.ts";
import { subjects } from "../subjects/index.ts";

/**
 * Tells each camera's owner how many WHEP viewers the camera has on this
 * gateway (`camfleet.ctl.camera.<id>.viewers`): at once when the count
 * changes, and again every `refreshMs` while it is above zero. The owner
 * forgets a count after `ttlMs`, so a gateway that dies stops counting
 * within that time, and an owner that restarted learns the counts again at
 * the next refresh. "No responders" means no node runs the camera right now:
 * the next refresh tries again.
 */

export interface ViewerReporterOptions {
  nc: NatsConnection;
  gateway: string;
  logger: Logger;
  /** How long the owner keeps a count, ms. Default 15000. */
  ttlMs?: number;
  /** Re-sends of non-zero counts, ms. Default ttlMs / 3. */
  refreshMs?: number;
  /** Deadline of one report, ms. Default 2000. */
  timeoutMs?: number;
}

export class ViewerReporter {
  readonly #counts = new Map<string, number>();
  readonly #ttlMs: number;
  readonly #timer: NodeJS.Timeout;
  readonly #log: Logger;
  /** Reports sent and answered, for tests and stats. */
  sent = 0;

  constructor(private readonly options: ViewerReporterOptions) {
    this.#ttlMs = options.ttlMs ?? 15_000;
    this.#log = options.logger.child({ component: "viewer-reporter" });
    this.#timer = setInterval(() => this.#refresh(), options.refreshMs ?? this.#ttlMs / 3);
  }

  /** The camera now has `viewers` viewers here; reported at once if that changed. */
  set(camera: string, viewers: number): void {
    const before = this.#counts.get(camera) ?? 0;
    if (viewers > 0) this.#counts.set(camera, viewers);
    else this.#counts.delete(camera);
    if (viewers !== before) void this.#send(camera, viewers);
  }

  #refresh(): void {
    for (const [camera, viewers] of this.#counts) void this.#send(camera, viewers);
  }

  async #send(camera: string, viewers: number): Promise<void> {
    if (this.options.nc.isClosed()) return;
    try {
      const body = JSON.stringify({ gateway: this.options.gateway, viewers, ttl_ms: this.#ttlMs });
      await this.options.nc.request(subjects.ctl.cameraViewers(camera), body, { timeout: this.options.timeoutMs ?? 2000 });
      this.sent++;
    } catch (err) {
      this.#log.debug({ err, camera, viewers }, "viewer report not delivered (camera not running anywhere yet?)");
    }
  }

  /** Stops refreshing; with `zero`, tells every owner this gateway has no viewers left. */
  async stop(zero = true): Promise<void> {
    clearInterval(this.#timer);
    if (zero) await Promise.all([...this.#counts.keys()].map((camera) => this.#send(camera, 0)));
    this.#counts.clear();
  }
}
