import type { KV } from "@nats-io/kv";
import { kvKeys, LeaseSchema, type Lease } from "../../subjects/index.ts";
import { every, realClock, type Clock, type Repeating } from "../clock.ts";
import { isNoLeader, isTransientNatsError, KvClaims, natsErrorKind } from "../infra/index.ts";
import { LOG_MESSAGES } from "../log-messages.ts";
import type { Logger } from "../logger.ts";
import type { NodeMetrics } from "../metrics.ts";

/**
 * Lease timing, all derived from the TTL so one knob tunes failover (the
 * argument is in docs/architecture.md, "Leases and fencing"):
 * - renew every TTL/6;
 * - the holder fences itself (stops publishing, stops its actor) when its
 *   last successful renewal was sent more than TTL/2 ago, unless it holds a
 *   proof that nobody can write the bucket (an "outage hold", below);
 * - others take a lease over once they saw it unchanged for a full TTL of
 *   time in which their own KV writes worked;
 * - or for TTL/2 + TTL/10 when the holder is provably not connected (its
 *   presence subject has no responder): TTL/10 past the holder's own fence;
 * - a holder whose renewals keep failing just after an outage hold (the
 *   new leader is up, the first writes time out) holds on for at most
 *   TTL − TTL/10 past the last renewal that found no leader: every taker's
 *   ages restarted when the leader came back, so none can take over before a
 *   full TTL after it (the "post-election hold").
 */
export function leaseTiming(ttlMs: number): {
  renewEveryMs: number;
  fenceAfterMs: number;
  fastTakeoverAfterMs: number;
  takeoverAfterMs: number;
  postElectionHoldMs: number;
} {
  return { renewEveryMs: ttlMs / 6, fenceAfterMs: ttlMs / 2, fastTakeoverAfterMs: ttlMs / 2 + ttlMs / 10, takeoverAfterMs: ttlMs, postElectionHoldMs: ttlMs - ttlMs / 10 };
}

export interface OwnedLease {
  camera: string;
  /** Revision of the claim: the fencing token stamped on every event. */
  epoch: number;
  /** Latest revision written by us: the next renewal's compare-and-set. */
  revision: number;
  acquiredTs: number;
  /** Monotonic time (the keeper's clock) after which we must consider the lease lost. */
  validUntil: number;
  /** When the write at `revision` was sent (the keeper's monotonic clock): `validUntil` counts from it. */
  renewedAt: number;
  /**
   * When the latest renewal that found no leader while our server was in the
   * majority was sent, if none has worked since: the post-election hold
   * counts from it.
   */
  outageHeldAt?: number;
}

/** Renewals failing in a row: since when (the first failed one was sent), and how many of each kind (natsErrorKind). */
export interface RenewalTrouble {
  since: number;
  errors: Record<string, number>;
  /** Failed renewals that extended a lease: by the outage hold, by the post-election hold. */
  held: { outage: number; postElection: number };
}

export type LeaseLossReason = "expired" | "taken";

export interface LeaseKeeperOptions {
  kv: KV;
  node: string;
  ttlMs: number;
  logger: Logger;
  metrics: NodeMetrics;
  /** Called once per lost lease, before anyone else can claim it. The actor must stop. */
  onLost(camera: string, reason: LeaseLossReason, lease: Readonly<OwnedLease>): void;
  /**
   * After a renewal found no stream leader (isNoLeader): resolves true when
   * this node can show that its NATS server is in the cluster's majority, so
   * that no leader exists anywhere and nobody can take a lease over. Without
   * it, a renewal that finds no leader is a failure like any other.
   */
  outageProof?: () => Promise<boolean>;
  /** Each renewal's outcome as far as KV health goes: true when the bucket answered (a lost compare-and-set included). */
  onKvWrite?: (ok: boolean) => void;
  clock?: Clock;
}

/**
 * The leases this node holds: claim, renew and release with revision
 * compare-and-set in KV bucket camfleet_leases, and self-fencing when
 * renewals stop working. Works on nats-server 2.9: no per-key TTL, no expiry
 * notifications; expiry is judged by elapsed time on each node's own clock.
 */
export class LeaseKeeper {
  readonly #leases = new Map<string, OwnedLease>();
  readonly #renewing = new Set<string>();
  readonly #timing: ReturnType<typeof leaseTiming>;
  readonly #clock: Clock;
  readonly #claims: KvClaims;
  #renewTimer?: Repeating;
  #fenceTimer?: Repeating;
  /** The latest outage proof asked for, shared by the renewals of one round. */
  #proof?: { startedAt: number; result: Promise<boolean> };
  /** Set while renewals fail, for the logs: cleared (and summed up) by the next one that works. */
  #trouble?: RenewalTrouble;

  constructor(private readonly options: LeaseKeeperOptions) {
    this.#timing = leaseTiming(options.ttlMs);
    this.#clock = options.clock ?? realClock;
    // Staleness of others' leases is the cluster view's to judge; the keeper only writes.
    this.#claims = new KvClaims({ kv: options.kv, staleAfterMs: this.#timing.takeoverAfterMs, clock: this.#clock });
  }

  start(): void {
    this.#renewTimer = every(this.#clock, this.#timing.renewEveryMs, () => void this.renewAll());
    // Checked often: the fence must fall well inside the margin.
    this.#fenceTimer = every(this.#clock, Math.min(50, this.#timing.renewEveryMs / 4), () => this.#fenceExpired());
  }

  stop(): void {
    this.#renewTimer?.stop();
    this.#fenceTimer?.stop();
  }

  get(camera: string): OwnedLease | undefined {
    return this.#leases.get(camera);
  }

  owned(): OwnedLease[] {
    return [...this.#leases.values()];
  }

  /** The current run of failing renewals, if any: a fence's log says what they were. */
  trouble(): Readonly<RenewalTrouble> | undefined {
    return this.#trouble;
  }

  /** True while events for the camera may still be published by this node. */
  isValid(camera: string): boolean {
    const lease = this.#leases.get(camera);
    return lease !== undefined && this.#clock.now() < lease.validUntil;
  }

  /**
   * Claims a camera: `create` when nobody holds it, or `update` at the
   * revision last seen when taking over from a holder known to be gone.
   * Resolves undefined when another node won the race.
   */
  async claim(camera: string, takeoverRevision?: number): Promise<OwnedLease | undefined> {
    const key = kvKeys.lease(camera);
    const sentAt = this.#clock.now();
    const now = this.#clock.wallNow();
    const draft: Lease = { camera, node: this.options.node, epoch: 0, acquired_ts: now, renewed_ts: now };
    const claimRevision =
      takeoverRevision === undefined ? await this.#claims.create(key, JSON.stringify(draft)) : await this.#claims.takeOver(key, JSON.stringify(draft), takeoverRevision);
    if (claimRevision === undefined) return undefined;
    // The claim's revision is the epoch; stamp it into the value so readers see it.
    const stamped: Lease = { ...draft, epoch: claimRevision };
    const revision = await this.#claims.renew(key, JSON.stringify(stamped), claimRevision);
    if (revision === undefined) return undefined;
    const lease: OwnedLease = { camera, epoch: claimRevision, revision, acquiredTs: now, validUntil: sentAt + this.#timing.fenceAfterMs, renewedAt: sentAt };
    this.#leases.set(camera, lease);
    return lease;
  }

  /**
   * Renews every held lease once; failures leave the lease to expire and
   * fence. `force` renews even leases with a renewal in flight (right after a
   * reconnect, when that one is likely lost): compare-and-set keeps it safe.
   */
  async renewAll(options: { force?: boolean } = {}): Promise<void> {
    await Promise.all([...this.#leases.values()].map((lease) => this.#renew(lease, options.force ?? false)));
  }

  async #renew(lease: OwnedLease, force: boolean): Promise<void> {
    if (this.#renewing.has(lease.camera) && !force) return;
    this.#renewing.add(lease.camera);
    const sentAt = this.#clock.now();
    const value: Lease = { camera: lease.camera, node: this.options.node, epoch: lease.epoch, acquired_ts: lease.acquiredTs, renewed_ts: this.#clock.wallNow() };
    let again = false;
    try {
      const outcome = await this.#claims.renewOrConflict(kvKeys.lease(lease.camera), JSON.stringify(value), lease.revision);
      this.options.onKvWrite?.(true);
      const revision = "revision" in outcome ? outcome.revision : undefined;
      if (!("revision" in outcome)) {
        this.options.metrics.leaseRenewFailures.inc();
        // Our own earlier write may have landed: then renew from it at once, not a period later.
        again = await this.#resolveConflict(lease, outcome.conflictAt);
      } else if (revision !== undefined && this.#leases.get(lease.camera) === lease) {
        lease.revision = revision;
        lease.validUntil = sentAt + this.#timing.fenceAfterMs;
        lease.renewedAt = sentAt;
        lease.outageHeldAt = undefined;
        this.#troubleOver();
      }
    } catch (err) {
      this.options.onKvWrite?.(false);
      this.options.metrics.leaseRenewFailures.inc();
      this.#noteTrouble(sentAt, err);
      if (isNoLeader(err) && (await this.#outageProven(sentAt)) && this.#leases.get(lease.camera) === lease) {
        // No leader, and our server is in the majority: nobody can write the bucket, so
        // nobody can take this lease over before sentAt + fenceAfter (docs/architecture.md).
        lease.outageHeldAt = Math.max(lease.outageHeldAt ?? sentAt, sentAt);
        if (this.#trouble !== undefined) this.#trouble.held.outage++;
        this.#holdUntil(lease, sentAt + this.#timing.fenceAfterMs, "lease renewal found no leader while our server is in the majority; holding");
      } else if (lease.outageHeldAt !== undefined && isTransientNatsError(err) && this.#leases.get(lease.camera) === lease) {
        // Just after an outage hold: the new leader is up but our writes do not land yet
        // (measured: timeouts for 1.5 s after a leases election). Every taker's ages restarted
        // when the leader came back, after outageHeldAt, so a takeover needs a full TTL past it.
        const until = Math.min(sentAt + this.#timing.fenceAfterMs, lease.outageHeldAt + this.#timing.postElectionHoldMs);
        if (this.#trouble !== undefined && until > lease.validUntil) this.#trouble.held.postElection++;
        this.#holdUntil(lease, until, "lease renewal failed just after an outage hold; holding on (post-election hold)");
      } else {
        this.options.logger.debug({ camera: lease.camera, err }, "lease renewal failed; retrying until the fence");
      }
    } finally {
      this.#renewing.delete(lease.camera);
    }
    if (again && this.#leases.get(lease.camera) === lease) await this.#renew(lease, false);
  }

  #holdUntil(lease: OwnedLease, until: number, why: string): void {
    if (until <= lease.validUntil) return;
    lease.validUntil = until;
    this.options.logger.debug({ camera: lease.camera, validForMs: Math.round(until - this.#clock.now()) }, why);
  }

  /** A renewal failed: the first of a run is logged at info, with what went wrong. */
  #noteTrouble(sentAt: number, err: unknown): void {
    const kind = natsErrorKind(err);
    if (this.#trouble === undefined) {
      this.#trouble = { since: sentAt, errors: {}, held: { outage: 0, postElection: 0 } };
      this.options.logger.info({ error: kind, err }, LOG_MESSAGES.leaseRenewalsFailing);
    }
    this.#trouble.errors[kind] = (this.#trouble.errors[kind] ?? 0) + 1;
  }

  /** A renewal worked: a run of failures before it is summed up at info. */
  #troubleOver(): void {
    const trouble = this.#trouble;
    if (trouble === undefined) return;
    this.#trouble = undefined;
    this.options.logger.info({ failedForMs: Math.round(this.#clock.now() - trouble.since), errors: trouble.errors, held: trouble.held }, LOG_MESSAGES.leaseRenewalsWork);
  }

  /** An outage proof asked for at or after `since` (so it speaks of a moment after that renewal was sent). */
  #outageProven(since: number): Promise<boolean> {
    const ask = this.options.outageProof;
    if (ask === undefined) return Promise.resolve(false);
    if (this.#proof === undefined || this.#proof.startedAt < since) {
      this.#proof = { startedAt: this.#clock.now(), result: ask().catch(() => false) };
    }
    return this.#proof.result;
  }

  /**
   * A renewal lost its compare-and-set, to revision `conflictAt` when
   * JetStream said. Either our own earlier write landed after its reply was
   * lost (adopt its revision: true, renew again), or someone took the lease
   * (lost), or the read does not tell yet (the fence decides).
   *
   * The revision is read by number when known, not as "the latest": in 2 of
   * 24 leases-leader kills every holder fenced itself 1.5 s after the new
   * leader was up, its renewals answered (no failure logged) yet none
   * renewing: the sign of a latest-value read that kept showing the
   * holder's own older revision, so it kept renewing at it.
   */
  async #resolveConflict(lease: OwnedLease, conflictAt: number | undefined): Promise<boolean> {
    const key = kvKeys.lease(lease.camera);
    try {
      const entry = await this.options.kv.get(key, conflictAt !== undefined ? { revision: conflictAt } : undefined);
      // Lost or re-claimed meanwhile: this answer speaks of a lease we no longer hold.
      if (this.#leases.get(lease.camera) !== lease) return false;
      if (entry !== null && entry.operation === "PUT") {
        const current = LeaseSchema.safeParse(entry.json());
        if (current.success && current.data.node === this.options.node && current.data.epoch === lease.epoch) {
          if (entry.revision === lease.revision) return false;
          // Newer: a renewal whose reply was lost had landed. Older (only when JetStream named it:
          // the key's last revision on the leader now): the stream lost our later writes in a
          // leader change. Either way the key holds our own lease: renew from where it stands.
          if (entry.revision < lease.revision && conflictAt === undefined) return false;
          this.options.logger.info({ camera: lease.camera, revision: entry.revision, ours: lease.revision }, entry.revision > lease.revision ? "a renewal whose reply was lost had landed; renewing from it" : LOG_MESSAGES.leaseRevisionWentBack);
          lease.revision = entry.revision;
          return true;
        }
      }
      // A revision read by number that is not the key's latest can only be older than the
      // truth: a takeover is judged on the latest value, never on a historic one.
      if (conflictAt !== undefined && entry === null) return false;
    } catch (err) {
      this.options.logger.debug({ camera: lease.camera, err }, "reading a conflicting lease failed");
      return false; // unknown: the fence decides
    }
    this.#lose(lease.camera, "taken");
    return false;
  }

  #fenceExpired(): void {
    const now = this.#clock.now();
    for (const lease of this.#leases.values()) {
      if (now >= lease.validUntil) this.#lose(lease.camera, "expired");
    }
  }

  #lose(camera: string, reason: LeaseLossReason): void {
    const lease = this.#leases.get(camera);
    if (lease === undefined) return;
    this.#leases.delete(camera);
    this.options.onLost(camera, reason, lease);
  }

  /** Gives a lease up: forgotten at once, then deleted if still at our revision. */
  async release(camera: string): Promise<void> {
    const lease = this.#leases.get(camera);
    if (lease === undefined) return;
    this.#leases.delete(camera);
    try {
      if (!(await this.#claims.release(kvKeys.lease(camera), lease.revision))) this.options.logger.debug({ camera }, "lease already taken over; nothing to delete");
    } catch (err) {
      // Taken already, or NATS is away: the lease then expires by itself.
      this.options.logger.debug({ camera, err }, "lease delete failed; it will expire");
    }
  }
}
