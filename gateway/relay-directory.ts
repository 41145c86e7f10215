import type { KV } from "@nats-io/kv";
import { isCasConflict, type Logger } from "../runtime/index.ts";
import { kvKeys, RelaySchema, type Relay } from "../subjects/index.ts";

/**
 * Where each camera's media relay lives, in KV bucket camfleet_relays.
 *
 * The first gateway that needs a camera's relay (a WHIP publisher or a WHEP
 * viewer arrives, and no live gateway holds it) claims it with KV `create`;
 * every other gateway then answers WHIP and WHEP for that camera with a 307
 * to the holder. The holder renews its claim every `ttlMs / 3` with
 * compare-and-set, and deletes it when the camera has neither publisher nor
 * viewers there. A claim not renewed for `ttlMs` (its gateway died) is stale
 * and may be taken over with `update` at the revision seen, so two gateways
 * never both win. Staleness is judged from `renewed_ts`, so gateways' clocks
 * must agree to well within the TTL (NTP).
 */

export interface RelayDirectoryOptions {
  kv: KV;
  /** This gateway's id. */
  gateway: string;
  /** This gateway's public base URL (known once its server listens). */
  url: () => string;
  /** A claim not renewed for this long is stale, ms. Default 6000. */
  ttlMs?: number;
  logger: Logger;
  /** What this gateway has of a camera now, written into each renewal. */
  describe(camera: string): { publishing: boolean; viewers: number };
}

export type Placement = { local: true } | { local: false; relay: Relay };

export class RelayDirectory {
  readonly #held = new Map<string, { revision: number; claimedTs: number }>();
  readonly #ttlMs: number;
  readonly #timer: NodeJS.Timeout;
  readonly #log: Logger;

  constructor(private readonly options: RelayDirectoryOptions) {
    this.#ttlMs = options.ttlMs ?? 6000;
    this.#log = options.logger.child({ component: "relay-directory" });
    this.#timer = setInterval(() => void this.renewAll(), this.#ttlMs / 3);
  }

  #value(camera: string, claimedTs: number): string {
    const now = Date.now();
    const have = this.options.describe(camera);
    const relay: Relay = { camera, gateway: this.options.gateway, url: this.options.url(), claimed_ts: claimedTs, renewed_ts: now, ...have };
    return JSON.stringify(relay);
  }

  #fresh(relay: Relay): boolean {
    return Date.now() - relay.renewed_ts < this.#ttlMs;
  }

  /** The live holder of a camera's relay, if any. */
  async holder(camera: string): Promise<Relay | undefined> {
    const entry = await this.options.kv.get(kvKeys.relay(camera));
    if (entry === null || entry.operation !== "PUT") return undefined;
    const parsed = RelaySchema.safeParse(entry.json());
    return parsed.success && this.#fresh(parsed.data) ? parsed.data : undefined;
  }

  /** Claims the camera's relay for this gateway, or says which gateway holds it. */
  async acquire(camera: string): Promise<Placement> {
    const key = kvKeys.relay(camera);
    for (let attempt = 0; attempt < 4; attempt++) {
      const entry = await this.options.kv.get(key);
      const parsed = entry !== null && entry.operation === "PUT" ? RelaySchema.safeParse(entry.json()) : undefined;
      const current = parsed?.success === true ? parsed.data : undefined;
      if (current !== undefined && current.gateway === this.options.gateway) {
        this.#held.set(camera, { revision: entry!.revision, claimedTs: current.claimed_ts });
        return { local: true };
      }
      if (current !== undefined && this.#fresh(current)) return { local: false, relay: current };
      const claimedTs = Date.now();
      try {
        // create also takes a deleted key; update at the revision seen takes a stale claim over.
        const revision =
          entry === null || entry.operation !== "PUT"
            ? await this.options.kv.create(key, this.#value(camera, claimedTs))
            : await this.options.kv.update(key, this.#value(camera, claimedTs), entry.revision);
        this.#held.set(camera, { revision, claimedTs });
        this.#log.info({ camera, takeover: current !== undefined ? current.gateway : undefined }, "holding the camera's relay");
        return { local: true };
      } catch (err) {
        // Another gateway claimed it between our read and write: read again.
        if (!isCasConflict(err)) throw err;
      }
    }
    const relay = await this.holder(camera);
    if (relay !== undefined && relay.gateway !== this.options.gateway) return { local: false, relay };
    throw new Error(`could not settle who holds the relay of camera ${camera}`);
  }

  holds(camera: string): boolean {
    return this.#held.has(camera);
  }

  /** Gives the camera's relay up (nothing of it is left here). */
  async release(camera: string): Promise<void> {
    const held = this.#held.get(camera);
    if (held === undefined) return;
    this.#held.delete(camera);
    try {
      await this.options.kv.delete(kvKeys.relay(camera), { previousSeq: held.revision });
    } catch (err) {
      this.#log.debug({ err, camera }, "releasing the relay claim failed; it goes stale");
    }
  }

  /** Renews every claim now (also on a timer); a claim lost to another gateway is forgotten. */
  async renewAll(): Promise<void> {
    await Promise.all(
      [...this.#held].map(async ([camera, held]) => {
        try {
          held.revision = await this.options.kv.update(kvKeys.relay(camera), this.#value(camera, held.claimedTs), held.revision);
        } catch (err) {
          if (isCasConflict(err)) {
            this.#held.delete(camera);
            this.#log.warn({ camera }, "another gateway took the camera's relay over (our claim had gone stale)");
          } else {
            this.#log.debug({ err, camera }, "renewing the relay claim failed");
          }
        }
      }),
    );
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all([...this.#held.keys()].map((camera) => this.release(camera)));
  }
}

