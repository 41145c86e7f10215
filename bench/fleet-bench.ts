// Shared pieces of the runtime benchmarks: a nats-server, node processes with
// sim actors, and live views of ownership and state.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { NatsServerProcess } from "../runtime/infra/nats-server.ts";
import { BUCKETS, LeaseSchema, StatusEventSchema, subjects } from "../subjects/index.ts";
import { runCamfleet, type CamfleetProcess } from "../test/helpers/camfleet-process.ts";

export interface Bench {
  /** The bench's own one-server NATS; undefined when it was given servers (`natsUrls`). */
  nats: NatsServerProcess | undefined;
  natsUrls: string[];
  nc: NatsConnection;
  cameras: KV;
  nodes: Map<string, CamfleetProcess>;
  /** camera → {node, epoch} of the current claim (epoch 0 drafts are skipped). */
  owners: Map<string, { node: string; epoch: number }>;
  /** camera → {node, epoch, state} of the last status event. */
  states: Map<string, { node: string; epoch: number; state: string }>;
  /** Called with each status event as it arrives (performance.now() of arrival). */
  onStatus?: (ev: { camera: string; node: string; epoch: number; state: string }, at: number) => void;
  /** Called with each lease write as it arrives (performance.now() of arrival). */
  onLease?: (camera: string, lease: { node: string; epoch: number }, at: number) => void;
  startNode(id: string, env?: Record<string, string>): Promise<CamfleetProcess>;
  /** Starts watching leases; call once a node has created the buckets. */
  watchLeases(): Promise<void>;
  close(): Promise<void>;
}

/** A bench fleet: on its own nats-server, or on the servers given (e.g. a cluster). */
export async function startBench(opts: { natsUrls?: string[] } = {}): Promise<Bench> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-bench-"));
  const cleanups: Array<() => Promise<void>> = [];
  let nats: NatsServerProcess | undefined;
  if (opts.natsUrls === undefined) {
    nats = new NatsServerProcess({ name: "bench", storeDir: join(dir, "store") });
    await nats.start();
  }
  const natsUrls = opts.natsUrls ?? [nats!.url];
  const nc = await connect({ servers: natsUrls, noAsyncTraces: true });
  const nodes = new Map<string, CamfleetProcess>();
  const owners = new Map<string, { node: string; epoch: number }>();
  const states = new Map<string, { node: string; epoch: number; state: string }>();

  const bench: Bench = {
    nats,
    natsUrls,
    nc,
    cameras: undefined as unknown as KV,
    nodes,
    owners,
    states,
    async startNode(id, env = {}) {
      const proc = runCamfleet(["node"], {
        env: { NATS_URL: natsUrls.join(","), NODE_ID: id, HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", LOG_LEVEL: "warn", ...env },
        onCleanup: (fn) => void cleanups.push(fn),
      });
      nodes.set(id, proc);
      await waitUntil(async () => (await nc.request(subjects.ctl.nodesList, "{}", { timeout: 2000 }).then((m) => m.string().includes(`"${id}"`)).catch(() => false)), 60_000, `node ${id} ready`);
      return proc;
    },
    async watchLeases() {
      const kvm = new Kvm(nc);
      bench.cameras = await kvm.open(BUCKETS.cameras);
      const leases = await kvm.open(BUCKETS.leases);
      const iter = await leases.watch();
      cleanups.push(async () => iter.stop());
      void (async () => {
        for await (const e of iter) {
          if (e.operation !== "PUT") owners.delete(e.key);
          else {
            const lease = LeaseSchema.safeParse(e.json());
            if (lease.success && lease.data.epoch > 0) {
              owners.set(e.key, { node: lease.data.node, epoch: lease.data.epoch });
              bench.onLease?.(e.key, { node: lease.data.node, epoch: lease.data.epoch }, performance.now());
            }
          }
        }
      })();
    },
    async close() {
      for (const fn of cleanups.reverse()) await fn();
      await nc.close().catch(() => undefined);
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  nc.subscribe(subjects.statusAll, {
    callback: (_err, msg) => {
      const ev = StatusEventSchema.safeParse(msg.json());
      if (!ev.success) return;
      const state = { camera: ev.data.camera, node: ev.data.node, epoch: ev.data.epoch, state: ev.data.state };
      states.set(ev.data.camera, state);
      bench.onStatus?.(state, performance.now());
    },
  });
  return bench;
}

export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string, intervalMs = 10): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await check()) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export function countBy<T>(values: Iterable<T>, key: (v: T) => string): Map<string, number> {
  const out = new Map<string, number>();
  for (const v of values) out.set(key(v), (out.get(key(v)) ?? 0) + 1);
  return out;
}

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
