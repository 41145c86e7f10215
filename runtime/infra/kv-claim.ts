import { jetstream, JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { jserrors } from "@nats-io/jetstream/internal";
import { NoRespondersError, RequestError, type NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { realClock, type Clock } from "../clock.ts";

/**
 * Opens a KV bucket whose every request (puts, compare-and-sets, deletes,
 * gets, status) gives up after `timeoutMs`. `Kvm.open(name, { timeout })`
 * does not: its writes wait for the JetStream context's timeout, 5 s by
 * default, and a lease renewal stuck that long outlives its own fence
 * (measured: every holder fenced 1.5 s after its last answered renewal in a
 * leases election, its next renewal still in flight).
 */
export function openKvWithTimeout(nc: NatsConnection, bucket: string, timeoutMs: number): Promise<KV> {
  return new Kvm(jetstream(nc, { timeout: timeoutMs })).open(bucket);
}

/**
 * True when a KV write lost its compare-and-set: someone else wrote the key
 * first. Servers report it under two codes: StreamWrongLastSequence for an
 * `update` at a stale revision (and a `create` of a key that exists), and
 * StreamWrongLastSequenceUnknown, which newer servers use for a `create`
 * whose key already has a value.
 */
export function isCasConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/**
 * The revision a compare-and-set lost to, from JetStream's own answer
 * ("wrong last sequence: N"): what the stream held when it applied the
 * write, which a read right after an election may not show yet.
 */
export function conflictRevision(err: unknown): number | undefined {
  if (!isCasConflict(err)) return undefined;
  const m = /wrong last sequence: (\d+)/i.exec((err as Error).message);
  return m === null ? undefined : Number(m[1]);
}

/**
 * True when a KV write found no server to take it: nobody on the cluster
 * holds the stream's subscription, which only its leader does. On nats-server
 * 2.9 that is the answer all through a stream leader election (measured: every
 * write of a 6.5 s election, from the moment the leader died), and the v3
 * client reports it as JetStreamNotEnabled. Unlike a timeout, it is the server
 * saying "no leader here", not "no answer": see docs/architecture.md for what
 * the lease keeper makes of it.
 */
export function isNoLeader(err: unknown): boolean {
  return err instanceof jserrors.JetStreamNotEnabled || err instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders());
}

/** `work`'s value, or undefined when it lost a compare-and-set; other errors pass. */
async function unlessConflict<T>(work: () => Promise<T>): Promise<T | undefined> {
  try {
    return await work();
  } catch (err) {
    if (isCasConflict(err)) return undefined;
    throw err;
  }
}

export interface KvClaimOptions {
  kv: KV;
  /** An entry unchanged this long, on this process's clock, is stale and may be taken over, ms. */
  staleAfterMs: number;
  clock?: Clock;
}

/**
 * One key in KV held by one process at a time, with compare-and-set on every
 * write so two contenders can never both win: `create` when nobody holds it,
 * `takeOver` of a stale entry at the revision seen, `renew` at the revision
 * last written, `release` with a revision-checked delete.
 *
 * Staleness is judged on this process's monotonic clock from when it last saw
 * an entry's revision change (`observe`), never from timestamps another
 * machine wrote, so clock skew between hosts cannot make a live claim look
 * stale. The price: an entry first seen now is fresh for a full
 * `staleAfterMs`, however long its writer has been gone.
 */
export class KvClaims {
  readonly #kv: KV;
  readonly #staleAfterMs: number;
  readonly #clock: Clock;
  /** Per key, the revision last seen and when it was first seen at that revision. */
  readonly #seen = new Map<string, { revision: number; since: number }>();

  constructor(options: KvClaimOptions) {
    this.#kv = options.kv;
    this.#staleAfterMs = options.staleAfterMs;
    this.#clock = options.clock ?? realClock;
  }

  /**
   * Notes the revision of a key as read now (undefined: no entry, or a delete
   * marker) and says whether the entry is stale: unchanged for `staleAfterMs`
   * since this process saw it change.
   */
  observe(key: string, revision: number | undefined): { stale: boolean; ageMs: number } {
    if (revision === undefined) {
      this.#seen.delete(key);
      return { stale: true, ageMs: Number.POSITIVE_INFINITY };
    }
    const now = this.#clock.now();
    const known = this.#seen.get(key);
    if (known === undefined || known.revision !== revision) {
      this.#seen.set(key, { revision, since: now });
      return { stale: false, ageMs: 0 };
    }
    const ageMs = now - known.since;
    return { stale: ageMs >= this.#staleAfterMs, ageMs };
  }

  /** Forgets what was seen of a key (e.g. once this process holds it itself). */
  forget(key: string): void {
    this.#seen.delete(key);
  }

  /** Writes a key nobody holds (absent or deleted); undefined when another writer was first. */
  create(key: string, value: string): Promise<number | undefined> {
    return unlessConflict(() => this.#kv.create(key, value));
  }

  /** Replaces a stale entry at the revision it was seen at; undefined when it changed since. */
  takeOver(key: string, value: string, revision: number): Promise<number | undefined> {
    return unlessConflict(() => this.#kv.update(key, value, revision));
  }

  /** Rewrites a held entry at the revision last written; undefined when someone else wrote since. */
  renew(key: string, value: string, revision: number): Promise<number | undefined> {
    return unlessConflict(() => this.#kv.update(key, value, revision));
  }

  /** `renew`, saying on a lost compare-and-set which revision it lost to (when JetStream told). */
  async renewOrConflict(key: string, value: string, revision: number): Promise<{ revision: number } | { conflictAt: number | undefined }> {
    try {
      return { revision: await this.#kv.update(key, value, revision) };
    } catch (err) {
      if (isCasConflict(err)) return { conflictAt: conflictRevision(err) };
      throw err;
    }
  }

  /** Deletes a held entry if it is still at `revision`; false when it was not (someone took it). Other failures throw. */
  async release(key: string, revision: number): Promise<boolean> {
    this.#seen.delete(key);
    return (await unlessConflict(() => this.#kv.delete(key, { previousSeq: revision }).then(() => true))) ?? false;
  }
}
