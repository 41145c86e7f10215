import type { KV, KvWatchEntry } from "@nats-io/kv";
import { CameraSpecSchema, LeaseSchema, NodeInfoSchema, type CameraSpec, type Lease, type NodeInfo } from "../subjects/index.ts";
import type { Logger } from "./logger.ts";

interface Observed<T> {
  value: T;
  revision: number;
  /** Monotonic time this node last saw the entry change. */
  observedAt: number;
}

export interface ClusterViewOptions {
  cameras: KV;
  leases: KV;
  nodes: KV;
  /** Lease and heartbeat TTL, ms. An entry unchanged for this long is expired. */
  ttlMs: number;
  logger: Logger;
  now?: () => number;
}

/**
 * This node's picture of the cluster, from watches on the three buckets.
 * Ages are measured on this node's monotonic clock from when it saw an entry
 * change, never from timestamps other nodes wrote, so clock skew between
 * machines cannot expire a lease early. While this node itself was cut off
 * it cannot judge anyone: a reconnect restarts every age.
 */
export class ClusterView {
  readonly cameras = new Map<string, Observed<CameraSpec>>();
  readonly leases = new Map<string, Observed<Lease>>();
  readonly nodes = new Map<string, Observed<NodeInfo>>();
  #connectedAt: number;
  readonly #now: () => number;
  readonly #listeners = new Set<() => void>();
  readonly #stops: Array<() => void> = [];

  constructor(private readonly options: ClusterViewOptions) {
    this.#now = options.now ?? (() => performance.now());
    this.#connectedAt = this.#now();
  }

  /** Starts the watches; resolves when each bucket's current content is loaded. */
  async start(): Promise<void> {
    await Promise.all([
      this.#watch(this.options.cameras, this.cameras, (v) => CameraSpecSchema.parse(v), "camera"),
      this.#watch(this.options.leases, this.leases, (v) => LeaseSchema.parse(v), "lease"),
      this.#watch(this.options.nodes, this.nodes, (v) => NodeInfoSchema.parse(v), "node"),
    ]);
  }

  stop(): void {
    for (const stop of this.#stops) stop();
  }

  onChange(listener: () => void): void {
    this.#listeners.add(listener);
  }

  /** Call after this node's NATS connection came back. */
  reconnected(): void {
    this.#connectedAt = this.#now();
  }

  /** Milliseconds since the entry last changed, as far as this node can judge. */
  age(entry: { observedAt: number }): number {
    return this.#now() - Math.max(entry.observedAt, this.#connectedAt);
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

  async #watch<T>(kv: KV, into: Map<string, Observed<T>>, parse: (v: unknown) => T, what: string): Promise<void> {
    const empty = (await kv.status()).values === 0;
    const iter = await kv.watch();
    this.#stops.push(() => iter.stop());
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    if (empty) markReady();
    void (async () => {
      for await (const entry of iter) {
        this.#apply(entry, into, parse, what);
        // delta is what the watcher still has to deliver: 0 once the initial content is in.
        if (entry.delta === 0) markReady();
        for (const listener of this.#listeners) listener();
      }
    })();
    await ready;
  }

  #apply<T>(entry: KvWatchEntry, into: Map<string, Observed<T>>, parse: (v: unknown) => T, what: string): void {
    if (entry.operation !== "PUT") {
      into.delete(entry.key);
      return;
    }
    try {
      into.set(entry.key, { value: parse(entry.json()), revision: entry.revision, observedAt: this.#now() });
    } catch (err) {
      // A value we cannot read is treated as absent; say so once per revision.
      into.delete(entry.key);
      this.options.logger.warn({ key: entry.key, revision: entry.revision, err }, `ignoring an unreadable ${what} entry`);
    }
  }
}
