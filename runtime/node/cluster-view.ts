import type { KV, KvEntry, KvWatchEntry } from "@nats-io/kv";
import type { QueuedIterator } from "@nats-io/transport-node";
import { LeaseSchema, NodeInfoSchema, type CameraSpec, type Lease, type NodeInfo } from "../../subjects/index.ts";
import { backoffDelay, type Backoff } from "../backoff.ts";
import { withTimeout } from "../deadline.ts";
import { every, realClock, sleep, type Clock, type Repeating } from "../clock.ts";
import { cameraSpecOf } from "../infra/index.ts";
import type { Logger } from "../logger.ts";
import { ageOf, type ClusterSnapshot, type Observed } from "./reconcile.ts";

/** Restarting a dead watch: 0.1 s doubling to 2 s, no jitter (one node, one watch). */
const WATCH_RESTART_BACKOFF: Backoff = { initialMs: 100, maxMs: 2000, jitter: "none" };

export type { Observed } from "./reconcile.ts";

export interface ClusterViewOptions {
  cameras: KV;
  leases: KV;
  nodes: KV;
  /** Lease and heartbeat TTL, ms. An entry unchanged for this long is expired. */
  ttlMs: number;
  logger: Logger;
  /** How often each watch is checked against its bucket, ms. Default TTL/2. */
  healthCheckMs?: number;
  clock?: Clock;
}

/** One watched bucket. */
interface Watched<T> {
  name: string;
  kv: KV;
  into: Map<string, Observed<T>>;
  /** The entry's value; throws on one that is unreadable. Called for PUTs only. */
  parse: (entry: KvEntry) => T;
  iter?: QueuedIterator<KvWatchEntry>;
  /** Highest revision the watch has delivered. */
  seen: number;
  /** The bucket's last sequence at the previous health check. */
  lastTarget?: number;
  restarting?: Promise<void>;
}

/**
 * This node's picture of the cluster, from watches on the three buckets.
 * Ages are measured on this node's monotonic clock from when it saw an entry
 * change, never from timestamps other nodes wrote, so clock skew between
 * machines cannot expire a lease early. While this node itself was cut off
 * it cannot judge anyone: a reconnect restarts every age.
 *
 * A watch is an ordered consumer on one server; when that server dies the
 * client may not notice for a long while. So each watch is checked against
 * its bucket's last sequence: one that has not caught up with where the
 * bucket stood a check ago is restarted, keeping the ages of entries that
 * did not change.
 */
export class ClusterView {
  readonly cameras = new Map<string, Observed<CameraSpec>>();
  readonly leases = new Map<string, Observed<Lease>>();
  readonly nodes = new Map<string, Observed<NodeInfo>>();
  #connectedAt: number;
  /** This node's last KV write failed (kvFailed): ages stand still. */
  #kvDown = false;
  readonly #clock: Clock;
  readonly #listeners = new Set<() => void>();
  readonly #watched: Array<Watched<CameraSpec> | Watched<Lease> | Watched<NodeInfo>>;
  #healthTimer?: Repeating;
  #stopped = false;
  /** The leases stream's leader at the last health check. */
  #leasesLeader?: string;
  /** The takeover check in flight (leasesLeaderUnchanged). */
  #leaderCheck?: Promise<boolean>;
  /** Nodes a presence probe found without a responder, and when the probe was sent. */
  readonly #gone = new Map<string, number>();

  constructor(private readonly options: ClusterViewOptions) {
    this.#clock = options.clock ?? realClock;
    this.#connectedAt = this.#clock.now();
    this.#watched = [
      { name: "camera", kv: options.cameras, into: this.cameras, parse: (e) => cameraSpecOf(e)!, seen: 0 },
      { name: "lease", kv: options.leases, into: this.leases, parse: (e) => LeaseSchema.parse(e.json()), seen: 0 },
      { name: "node", kv: options.nodes, into: this.nodes, parse: (e) => NodeInfoSchema.parse(e.json()), seen: 0 },
    ];
  }

  /** Starts the watches; resolves when each bucket's current content is loaded. */
  async start(): Promise<void> {
    await Promise.all(this.#watched.map((w) => this.#watch(w as Watched<unknown>)));
    this.#healthTimer = every(this.#clock, this.options.healthCheckMs ?? this.options.ttlMs / 2, () => void this.#checkHealth());
  }

  /** Stops the watches; resolves once their consumers are deleted on the server (or could not be). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#healthTimer?.stop();
    await Promise.all(this.#watched.map((w) => (w.iter !== undefined ? endWatch(w.iter) : undefined)));
  }

  onChange(listener: () => void): void {
    this.#listeners.add(listener);
  }

  /** Call after this node's NATS connection came back. */
  reconnected(): void {
    this.#connectedAt = this.#clock.now();
  }

  /**
   * Call when this node's KV writes work again after failing: while they
   * failed, others' could not renew either (a leader election stops every
   * writer), so no age counts from before. Same effect as a reconnect.
   */
  kvRegained(): void {
    this.#kvDown = false;
    this.#connectedAt = this.#clock.now();
  }

  /**
   * Call when one of this node's KV writes failed: until kvRegained(), no
   * age grows. Others cannot renew through the outage either, so a lease
   * that looks unchanged then is no sign of its holder's death; and the
   * first write that works again must not be a takeover judged by ages that
   * include the outage (measured: a takeover 40 ms after a leases election
   * ended beat its holder's first renewal).
   */
  kvFailed(): void {
    this.#kvDown = true;
  }

  /** The moment ages count from: now while KV writes fail. */
  #judgedSince(): number {
    return this.#kvDown ? this.#clock.now() : this.#connectedAt;
  }

  /** A presence probe sent at `sentAt` found no responder for `node`. */
  markGone(node: string, sentAt: number): void {
    this.#gone.set(node, sentAt);
  }

  /** `node` answered its presence probe. */
  markPresent(node: string): void {
    this.#gone.delete(node);
  }

  /** Nodes found gone by a probe sent within the last `freshMs` whose heartbeat did not change since. */
  goneNodes(freshMs: number): Set<string> {
    const now = this.#clock.now();
    const out = new Set<string>();
    for (const [node, sentAt] of this.#gone) {
      const beat = this.nodes.get(node);
      if (now - sentAt > freshMs || (beat !== undefined && beat.observedAt > sentAt)) this.#gone.delete(node);
      else out.add(node);
    }
    return out;
  }

  /** The view as one reconcile round reads it (the live maps, not copies: read it synchronously). */
  snapshot(extra: Pick<ClusterSnapshot, "gone" | "fastTakeoverMs"> = {}): ClusterSnapshot {
    return { cameras: this.cameras, leases: this.leases, nodes: this.nodes, connectedAt: this.#judgedSince(), ttlMs: this.options.ttlMs, ...extra };
  }

  /** Milliseconds since the entry last changed, as far as this node can judge. */
  age(entry: { observedAt: number }): number {
    return ageOf({ connectedAt: this.#judgedSince() }, entry, this.#clock.now());
  }

  leaseExpired(camera: string): boolean {
    const lease = this.leases.get(camera);
    return lease === undefined || this.age(lease) >= this.options.ttlMs;
  }

  /** The node holding a camera's lease, while the lease is not expired. */
  holder(camera: string): string | undefined {
    const lease = this.leases.get(camera);
    return lease !== undefined && !this.leaseExpired(camera) ? lease.value.node : undefined;
  }

  nodeAlive(node: string): boolean {
    const info = this.nodes.get(node);
    return info !== undefined && this.age(info) < this.options.ttlMs;
  }

  liveNodes(): NodeInfo[] {
    return [...this.nodes.values()].filter((n) => this.age(n) < this.options.ttlMs).map((n) => n.value);
  }

  /**
   * Reads one lease straight from the bucket (a lost compare-and-set says
   * our copy is stale) and updates the view with it.
   */
  async refreshLease(camera: string): Promise<void> {
    const w = this.#watched[1] as Watched<Lease>;
    const entry = await w.kv.get(camera);
    if (entry === null) return;
    this.#apply(w, entry, w.into);
  }

  async #watch<T>(w: Watched<T>): Promise<void> {
    const empty = (await w.kv.status()).values === 0;
    const iter = await w.kv.watch();
    w.iter = iter;
    // A (re)load fills a fresh map, swapped in once complete, so keys deleted
    // while a watch was dead disappear too.
    const fresh = new Map<string, Observed<T>>();
    let loading = true;
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    const finishLoad = () => {
      if (!loading) return;
      loading = false;
      w.into.clear();
      for (const [k, v] of fresh) w.into.set(k, v);
      markReady();
      this.#notify();
    };
    if (empty) finishLoad();
    void (async () => {
      for await (const entry of iter) {
        this.#apply(w, entry, loading ? fresh : w.into);
        // delta is what the watcher still has to deliver: 0 once the initial content is in.
        if (loading && entry.delta === 0) finishLoad();
        else if (!loading) this.#notify();
      }
      // Ended: by stop(), by a restart, or because the consumer died under us.
      if (!this.#stopped && w.iter === iter) void this.#restart(w, "its watch ended");
    })();
    await ready;
  }

  #apply<T>(w: Watched<T>, entry: KvEntry, into: Map<string, Observed<T>>): void {
    w.seen = Math.max(w.seen, entry.revision);
    if (entry.operation !== "PUT") {
      into.delete(entry.key);
      return;
    }
    const known = w.into.get(entry.key);
    // An entry seen before at the same revision keeps its age: it did not change.
    const observedAt = known !== undefined && known.revision === entry.revision ? known.observedAt : this.#clock.now();
    try {
      into.set(entry.key, { value: w.parse(entry), revision: entry.revision, observedAt });
    } catch (err) {
      into.delete(entry.key);
      this.options.logger.warn({ key: entry.key, revision: entry.revision, err }, `ignoring an unreadable ${w.name} entry`);
    }
  }

  async #checkHealth(): Promise<void> {
    await Promise.all(
      this.#watched.map(async (w) => {
        if (w.restarting !== undefined) return;
        let last: number;
        try {
          const info = (await w.kv.status()).streamInfo;
          last = info.state.last_seq;
          if (w.name === "lease") this.#noteLeasesLeader(info.cluster?.leader);
        } catch {
          return; // NATS away: nothing to judge by
        }
        if (w.lastTarget !== undefined && w.seen < w.lastTarget) {
          await this.#restart(w as Watched<unknown>, `it is behind its bucket (seen ${w.seen}, bucket was at ${w.lastTarget})`);
          w.lastTarget = undefined;
          return;
        }
        w.lastTarget = last;
      }),
    );
  }

  /**
   * Asked before a takeover: is the leases stream led by the server the last
   * health check saw? A new leader means an election since, which none of
   * this node's own writes need have met (a node holding no lease writes
   * none): its ages then restart and the takeover waits, instead of trusting
   * ages that span the election, through which the holder may have held its
   * lease by proof. False too when the stream does not answer. Concurrent
   * callers (one round's takeovers) share one request.
   */
  leasesLeaderUnchanged(): Promise<boolean> {
    this.#leaderCheck ??= (async () => {
      try {
        const leader = (await this.options.leases.status()).streamInfo.cluster?.leader;
        const before = this.#leasesLeader;
        const wasDown = this.#kvDown;
        this.#noteLeasesLeader(leader);
        return !wasDown && (before === undefined || leader === undefined || leader === before);
      } catch {
        this.kvFailed();
        return false;
      }
    })().finally(() => {
      this.#leaderCheck = undefined;
    });
    return this.#leaderCheck;
  }

  /**
   * A new leader of the leases stream means there was a moment with none, in
   * which nobody could renew: ages restart, as after kvRegained(). Catches a
   * short election that none of this node's own writes happened to meet.
   */
  #noteLeasesLeader(leader: string | undefined): void {
    if (leader === undefined) return;
    if (this.#leasesLeader !== undefined && leader !== this.#leasesLeader) {
      this.options.logger.debug({ from: this.#leasesLeader, to: leader }, "leases stream has a new leader; lease ages restart");
      this.kvRegained();
    } else if (this.#kvDown) {
      // The bucket has a leader again: a node that writes no lease (it holds none) learns it here.
      this.kvRegained();
    }
    this.#leasesLeader = leader;
  }

  #restart<T>(w: Watched<T>, why: string): Promise<void> {
    w.restarting ??= (async () => {
      this.options.logger.warn({ why }, `restarting the ${w.name} watch`);
      const old = w.iter;
      w.iter = undefined;
      if (old !== undefined) void endWatch(old);
      for (let attempt = 1; !this.#stopped; attempt++) {
        try {
          await this.#watch(w);
          return;
        } catch (err) {
          this.options.logger.debug({ err }, `restarting the ${w.name} watch failed; retrying`);
          await sleep(this.#clock, backoffDelay(WATCH_RESTART_BACKOFF, attempt));
        }
      }
    })().finally(() => {
      w.restarting = undefined;
    });
    return w.restarting;
  }

  #notify(): void {
    for (const listener of this.#listeners) listener();
  }
}

/**
 * Stops a KV watch and deletes its consumer on the server. A stopped watch
 * only unsubscribes: its ordered consumer stays for the 5 minutes of its
 * inactivity threshold, and a node that restarts watches after every NATS
 * fault piles them up (the soak counted 70 idle ones). The consumer hangs on
 * the iterator's `_data` (nats.js's kv.watch puts it there); a failed delete
 * (its server gone) leaves it to that threshold.
 */
async function endWatch(iter: QueuedIterator<KvWatchEntry>): Promise<void> {
  iter.stop();
  const consumer = (iter as { _data?: unknown })._data as { delete?: () => Promise<boolean> } | undefined;
  if (typeof consumer?.delete !== "function") return;
  await withTimeout(consumer.delete().catch(() => false), WATCH_DELETE_TIMEOUT_MS);
}

/** How long a stop waits for a watch consumer's delete, ms: a node stopping must not hang on it. */
const WATCH_DELETE_TIMEOUT_MS = 1000;

