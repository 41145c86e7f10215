// Does the NATS cluster keep every KV write it acknowledged? The lease
// keeper's compare-and-set and the epochs (a claim's revision is its fencing
// token) rest on it. The fault suite's leases-history check saw revisions one
// read returned vanish from the next, and epochs above their own revision,
// after kills of the leases leader (nats-server 2.9.10): this bench asks the
// server the question on its own, with no camfleet node in the way.
//
// A 3-server cluster, an R3 KV bucket, writers doing compare-and-set updates
// on KEYS keys as fast as the cluster answers (each acknowledged revision and
// value recorded). Then rounds of one kill -9 each, the server back after
// DOWN_S seconds and caught up:
//   1. baseline: a follower of the bucket's stream (no leader change);
//   2. the stream's leader.
// After each phase, every replica is made leader in turn and the whole stream
// read from it: an acknowledged revision missing, or holding another value,
// is a lost write; a replica whose stream differs from another's is a
// divergence.
//
//   npm run bench:acked-writes            # BENCH_RUNS (5) kills per phase
import { DeliverPolicy, DiscardPolicy, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { isCasConflict, openKvWithTimeout, type NatsServerProcess } from "../runtime/index.ts";
import { connectTestClient } from "../test/helpers/fleet.ts";
import { startNatsCluster } from "../test/helpers/nats-harness.ts";
import { readStreamToEnd } from "../test/helpers/streams.ts";
import { waitFor } from "../test/helpers/wait.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const KEYS = 4;
const DOWN_S = Number(process.env.BENCH_DOWN_S ?? 6);
const BUCKET = "acked_writes";
const STREAM = `KV_${BUCKET}`;

interface Acked {
  key: string;
  revision: number;
  value: string;
}

/** Writers: one loop per key, compare-and-set on the revision last acknowledged (or named by a refusal). */
function startWriters(nc: NatsConnection): { acked: Acked[]; stop(): Promise<void> } {
  const acked: Acked[] = [];
  let running = true;
  const loops = Array.from({ length: KEYS }, async (_, i) => {
    const kv = await openKvWithTimeout(nc, BUCKET, 500);
    const key = `k${i}`;
    let revision = await kv.put(key, `${key}:0`);
    acked.push({ key, revision, value: `${key}:0` });
    for (let n = 1; running; n++) {
      const value = `${key}:${n}`;
      try {
        revision = await kv.update(key, value, revision);
        acked.push({ key, revision, value });
      } catch (err) {
        if (isCasConflict(err)) {
          const m = /wrong last sequence: (\d+)/i.exec((err as Error).message);
          if (m !== null) revision = Number(m[1]);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  });
  return {
    acked,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

async function streamLeader(nc: NatsConnection): Promise<{ leader: string | undefined; current: boolean }> {
  const jsm = await jetstreamManager(nc, { timeout: 2000 });
  const info = await jsm.streams.info(STREAM);
  const replicas = info.cluster?.replicas ?? [];
  return { leader: info.cluster?.leader, current: replicas.length === 2 && replicas.every((r) => r.current) };
}

/** The stream as `server` stores it: that server made leader (step-downs until it is), then read to the end. */
async function readAs(nc: NatsConnection, server: string): Promise<Map<number, { key: string; value: string }>> {
  for (let attempt = 0; ; attempt++) {
    const { leader } = await waitFor(() => streamLeader(nc).catch(() => undefined), { timeoutMs: 30_000, message: "the stream's leader" });
    if (leader === server) break;
    if (attempt >= 20) throw new Error(`${server} never became leader of ${STREAM}`);
    await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${STREAM}`, undefined, { timeout: 5000 }).catch(() => undefined);
    await waitFor(async () => ((await streamLeader(nc).catch(() => undefined))?.leader !== leader ? true : undefined), { timeoutMs: 30_000, intervalMs: 200, message: "a new leader" });
  }
  const jsm = await jetstreamManager(nc);
  const last = (await jsm.streams.info(STREAM)).state.last_seq;
  const msgs = await readStreamToEnd(nc, STREAM, { deliver_policy: DeliverPolicy.All }, last, (m) => ({ seq: m.seq, key: m.subject.split(".").pop()!, value: m.string() }), 60_000);
  return new Map(msgs.map((m) => [m.seq, { key: m.key, value: m.value }]));
}

interface Verdict {
  acked: number;
  lost: number;
  example?: string;
  diverged: number;
}

async function judge(nc: NatsConnection, servers: readonly NatsServerProcess[], acked: readonly Acked[]): Promise<Verdict> {
  const replicas = new Map<string, Map<number, { key: string; value: string }>>();
  for (const s of servers) replicas.set(s.name, await readAs(nc, s.name));
  let lost = 0;
  let example: string | undefined;
  for (const a of acked) {
    for (const [name, stream] of replicas) {
      const m = stream.get(a.revision);
      if (m === undefined || m.key !== a.key || m.value !== a.value) {
        lost++;
        example ??= `${a.key} rev ${a.revision} "${a.value}" on ${name}: ${m === undefined ? "absent" : `"${m.value}" (${m.key})`}`;
        break;
      }
    }
  }
  const [first, ...rest] = [...replicas.values()];
  let diverged = 0;
  for (const other of rest) {
    for (const [seq, m] of first!) {
      const o = other.get(seq);
      if (o !== undefined && (o.key !== m.key || o.value !== m.value)) diverged++;
    }
  }
  return { acked: acked.length, lost, diverged, ...(example !== undefined ? { example } : {}) };
}

async function phase(nc: NatsConnection, servers: readonly NatsServerProcess[], victim: "follower" | "leader"): Promise<Verdict> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.purge(STREAM);
  const writers = startWriters(nc);
  try {
    for (let run = 1; run <= RUNS; run++) {
      await new Promise((r) => setTimeout(r, 2000));
      const { leader } = await waitFor(() => streamLeader(nc).catch(() => undefined), { timeoutMs: 30_000, message: "the stream's leader" });
      const target = victim === "leader" ? servers.find((s) => s.name === leader)! : servers.find((s) => s.name !== leader)!;
      const before = writers.acked.length;
      await target.kill();
      await new Promise((r) => setTimeout(r, DOWN_S * 1000));
      await target.start();
      await waitFor(async () => ((await streamLeader(nc).catch(() => undefined))?.current === true ? true : undefined), { timeoutMs: 60_000, intervalMs: 250, message: "every replica current" });
      console.log(`  ${victim} kill ${run}: ${target.name}, ${writers.acked.length - before} writes acknowledged meanwhile`);
    }
  } finally {
    await writers.stop();
  }
  return judge(nc, servers, writers.acked);
}

const cleanups: Array<() => Promise<void>> = [];
let code = 0;
try {
  const cluster = await startNatsCluster({ onCleanup: (fn) => void cleanups.push(fn) });
  const nc = await connectTestClient(cluster.urls, (fn) => void cleanups.push(fn));
  // A KV bucket's stream, but keeping every revision (a bucket's history stops at 64 per key),
  // so every acknowledged write can be looked for.
  await (await jetstreamManager(nc)).streams.add({
    name: STREAM,
    subjects: [`$KV.${BUCKET}.>`],
    num_replicas: 3,
    max_msgs_per_subject: -1,
    allow_rollup_hdrs: true,
    deny_delete: true,
    discard: DiscardPolicy.New,
  });
  console.log(`acked writes: ${KEYS} writers, ${RUNS} kills -9 per phase, down ${DOWN_S} s each (nats-server ${nc.info?.version ?? "?"} in a 3-server cluster)`);
  const baseline = await phase(nc, cluster.servers, "follower");
  const leader = await phase(nc, cluster.servers, "leader");
  console.table([
    { phase: "baseline: follower kills", ...baseline },
    { phase: "leader kills", ...leader },
  ]);
  if (baseline.lost + baseline.diverged + leader.lost + leader.diverged > 0) {
    console.log("acked writes: the cluster LOST acknowledged writes or its replicas diverged");
    code = 1;
  } else console.log("acked writes: every acknowledged write is on every replica");
} catch (err) {
  console.error(err);
  code = 2;
} finally {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
}
process.exit(code);
