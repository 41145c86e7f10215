import type { KV } from "@nats-io/kv";
import { every, KvClaims, realClock, type Clock, type Logger, type Repeating } from "../runtime/index.ts";
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
 * never both win. Staleness is judged on this gateway's monotonic clock from
 * when it last saw the claim's revision change (runtime's KvClaims), never
 * from `renewed_ts`, so gateways' clocks need not agree; a claim this gateway
 * sees for the first time counts as fresh for a full TTL.
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
  clock?: Clock;
}

export type Placement = { local: true } | { local: false; relay: Relay };

export class RelayDirectory {
  readonly #held = new Map<string, { revision: number; claimedTs: number }>();
  readonly #ttlMs: number;
  readonly #clock: Clock;
  readonly #claims: KvClaims;
  readonly #timer: Repeating;
  readonly #log: Logger;

  constructor(private readonly options: RelayDirectoryOptions) {
    this.#ttlMs = options.ttlMs ?? 6000;
    this.#clock = options.clock ?? realClock;
    this.#claims = new KvClaims({ kv: options.kv, staleAfterMs: this.#ttlMs, clock: this.#clock });
    this.#log = options.logger.child({ component: "relay-directory" });
    this.#timer = every(this.#clock, this.#ttlMs / 3, () => void this.renewAll());
  }

  #value(camera: string, claimedTs: number): string {
    const have = this.options.describe(camera);
    const relay: Relay = { camera, gateway: this.options.gateway, url: this.options.url(), claimed_ts: claimedTs, renewed_ts: this.#clock.wallNow(), ...have };
    return JSON.stringify(relay);
  }

  /** The camera's relay entry as read now, and whether it is stale by this gateway's clock. */
  async #read(camera: string): Promise<{ revision: number | undefined; relay: Relay | undefined; stale: boolean }> {
    const key = kvKeys.relay(camera);
    const entry = await this.options.kv.get(key);
    const revision = entry !== null && entry.operation === "PUT" ? entry.revision : undefined;
    const { stale } = this.#claims.observe(key, revision);
    const parsed = revision !== undefined ? RelaySchema.safeParse(entry!.json()) : undefined;
    return { revision, relay: parsed?.success === true ? parsed.data : undefined, stale };
  }

  /** The live holder of a camera's relay, if any. */
  async holder(camera: string): Promise<Relay | undefined> {
    const { relay, stale } = await this.#read(camera);
    return relay !== undefined && !stale ? relay : undefined;
  }

  /** Claims the camera's relay for this gateway, or says which gateway holds it. */
  async acquire(camera: string): Promise<Placement> {
    const key = kvKeys.relay(camera);
    for (let attempt = 0; attempt < 4; attempt++) {
      const { revision: seen, relay: current, stale } = await this.#read(camera);
      if (current !== undefined && current.gateway === this.options.gateway) {
        this.#held.set(camera, { revision: seen!, claimedTs: current.claimed_ts });
        return { local: true };
      }
      if (current !== undefined && !stale) return { local: false, relay: current };
      const claimedTs = this.#clock.wallNow();
      // create also takes a deleted key; update at the revision seen takes a stale (or unreadable) claim over.
      const revision =
        seen === undefined ? await this.#claims.create(key, this.#value(camera, claimedTs)) : await this.#claims.takeOver(key, this.#value(camera, claimedTs), seen);
      // undefined: another gateway wrote between our read and write; read again.
      if (revision !== undefined) {
        this.#held.set(camera, { revision, claimedTs });
        this.#log.info({ camera, takeover: current !== undefined ? current.gateway : undefined }, "holding the camera's relay");
        return { local: true };
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
      await this.#claims.release(kvKeys.relay(camera), held.revision);
    } catch (err) {
      this.#log.debug({ err, camera }, "releasing the relay claim failed; it goes stale");
    }
  }

  /**
   * Renews every claim now (also on a timer). A compare-and-set that fails is
   * read again before the claim is given up: a renewal of ours that timed out
   * may have landed after all, leaving our claim at a revision we did not
   * see. Only a claim another gateway now holds is forgotten.
   */
  async renewAll(): Promise<void> {
    await Promise.all(
      [...this.#held].map(async ([camera, held]) => {
        try {
          const revision = await this.#claims.renew(kvKeys.relay(camera), this.#value(camera, held.claimedTs), held.revision);
          if (revision !== undefined) {
            held.revision = revision;
            return;
          }
          const { revision: seen, relay } = await this.#read(camera);
          if (seen !== undefined && relay?.gateway === this.options.gateway && relay.claimed_ts === held.claimedTs) {
            held.revision = seen; // ours: renewed at the next round from the revision it really has
            this.#log.debug({ camera, revision: seen }, "our relay claim was at a revision we had not seen (a renewal that timed out landed)");
            return;
          }
          if (this.#held.get(camera) !== held) return; // released meanwhile
          this.#held.delete(camera);
          this.#log.warn({ camera, holder: relay?.gateway }, "another gateway took the camera's relay over (our claim had gone stale)");
        } catch (err) {
          this.#log.debug({ err, camera }, "renewing the relay claim failed");
        }
      }),
    );
  }

  async stop(): Promise<void> {
    this.#timer.stop();
    await Promise.all([...this.#held.keys()].map((camera) => this.release(camera)));
  }
}

