// Failover time: kill -9 the node of a 3-node fleet that owns the most
// cameras and time until every one of its cameras reports STREAMING under a
// new owner with a higher epoch. Two set-ups in one run:
//   1. baseline: sim actors on one nats-server (the runtime's own figure);
//   2. what a user sees: a 3-server NATS cluster, real RTSP cameras
//      (320x240@10, GStreamer), real FFmpeg ingest, default settings.
// Each kill is split into phases, per camera, by the bench's own clock:
//   kill → claimed (the new lease reaches the bench's KV watch)
//        → source ready (the new owner's STREAMING event: the actor reports it
//          on FFmpeg's first forwarded packet, which is a key frame)
// and the kill → STREAMING total, whose median and max over all kills are the
// targets (issue #14: ≤ 3 s median, ≤ 5 s max). FFmpeg's own spawn → ready
// time comes from the new owner's "source ready" log line.
//
// BENCH_RUNS (default 5) kills each; BENCH_CAMERAS (default 90) sim cameras,
// BENCH_RTSP_CAMERAS (default 6) real ones. LEASE_TTL_MS is left at its
// default unless set.
import { ensureJetStream } from "../runtime/index.ts";
import { startNatsCluster } from "../test/helpers/nats-harness.ts";
import { startRtspCamera } from "../test/helpers/rtsp-camera.ts";
import { countBy, quantile, startBench, waitUntil, type Bench } from "./fleet-bench.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SIM_CAMERAS = Number(process.env.BENCH_CAMERAS ?? 90);
const RTSP_CAMERAS = Number(process.env.BENCH_RTSP_CAMERAS ?? 6);
const TTL_MS = Number(process.env.LEASE_TTL_MS ?? 3000);

interface Kill {
  victim: string;
  cameras: number;
  /** Per camera, ms after the kill. */
  claimed: number[];
  streaming: number[];
  /** FFmpeg spawn → source ready, from the new owners' logs (real cameras only). */
  ffmpegReady: number[];
}

/** Every camera owned, STREAMING under its owner's epoch, the load even over 3 nodes. */
function settled(bench: Bench, cameras: number): boolean {
  const spread = countBy(bench.owners.values(), (o) => o.node);
  return (
    bench.owners.size === cameras &&
    spread.size === 3 &&
    Math.max(...spread.values()) - Math.min(...spread.values()) <= 1 &&
    [...bench.states.entries()].every(([cam, s]) => s.state === "STREAMING" && s.epoch === bench.owners.get(cam)?.epoch)
  );
}

/** Nodes `${label}1..3` must be running; each kill's victim is replaced by the next. */
async function runKills(bench: Bench, label: string, cameras: number, env: Record<string, string>): Promise<Kill[]> {
  let next = 4;
  const kills: Kill[] = [];
  for (let run = 1; run <= RUNS; run++) {
    await waitUntil(() => settled(bench, cameras), 90_000, `${label}: fleet settled`, 50);
    const live = [...bench.nodes.entries()].filter(([, p]) => p.child.exitCode === null && p.child.signalCode === null);
    const load = countBy(bench.owners.values(), (o) => o.node);
    const [victimId, victim] = live.sort((a, b) => (load.get(b[0]) ?? 0) - (load.get(a[0]) ?? 0))[0]!;
    const lost = new Map([...bench.owners.entries()].filter(([, o]) => o.node === victimId).map(([cam, o]) => [cam, o.epoch]));
    const claimedAt = new Map<string, number>();
    const streamingAt = new Map<string, number>();
    bench.onLease = (cam, lease, at) => {
      const old = lost.get(cam);
      if (old !== undefined && lease.node !== victimId && lease.epoch > old && !claimedAt.has(cam)) claimedAt.set(cam, at);
    };
    bench.onStatus = (ev, at) => {
      const old = lost.get(ev.camera);
      if (old !== undefined && ev.state === "STREAMING" && ev.node !== victimId && ev.epoch > old && !streamingAt.has(ev.camera)) streamingAt.set(ev.camera, at);
    };
    const logMarks = new Map([...bench.nodes.entries()].map(([id, p]) => [id, p.lines.length]));
    const t0 = performance.now();
    victim.child.kill("SIGKILL");
    await waitUntil(() => [...lost.keys()].every((c) => streamingAt.has(c)), 30_000, `${label}: cameras of ${victimId} streaming elsewhere`, 5);
    bench.onLease = undefined;
    bench.onStatus = undefined;
    await victim.exited;
    bench.nodes.delete(victimId);
    const ffmpegReady: number[] = [];
    for (const [id, p] of bench.nodes) {
      for (const line of p.lines.slice(logMarks.get(id) ?? 0)) {
        if (line.msg === "source ready" && typeof line.ms === "number" && lost.has(String(line.camera))) ffmpegReady.push(line.ms);
      }
    }
    const k: Kill = {
      victim: victimId,
      cameras: lost.size,
      claimed: [...lost.keys()].map((c) => (claimedAt.get(c) ?? streamingAt.get(c)!) - t0),
      streaming: [...lost.keys()].map((c) => streamingAt.get(c)! - t0),
      ffmpegReady,
    };
    kills.push(k);
    console.log(
      `${label} run ${run}: killed ${victimId} (${k.cameras} cameras): claimed after ${fmt(Math.max(...k.claimed))}, ` +
        `all STREAMING after ${fmt(Math.max(...k.streaming))}${ffmpegReady.length > 0 ? `, FFmpeg ready in ${fmt(Math.max(...ffmpegReady))}` : ""}`,
    );
    await bench.startNode(`${label}${next++}`, env);
  }
  return kills;
}

/** How long the RTSP server stays away in a recovery run: several retries' worth, so the backoff is at its cap. */
const OUTAGE_MS = Number(process.env.BENCH_OUTAGE_MS ?? 8000);

/**
 * The RTSP server (all cameras) stops, stays away OUTAGE_MS, comes back:
 * time from its READY line (it answers again) until every camera has
 * reported STREAMING again, same owner, same epoch. The issue measured 8.1–8.3 s.
 */
async function runRecoveries(bench: Bench, cam: { stop(): Promise<unknown>; restart(): Promise<void> }): Promise<number[]> {
  const times: number[] = [];
  for (let run = 1; run <= RUNS; run++) {
    await waitUntil(() => settled(bench, RTSP_CAMERAS), 90_000, "recovery: fleet settled", 50);
    await cam.stop();
    await waitUntil(() => [...bench.states.values()].every((s) => s.state !== "STREAMING"), 20_000, "recovery: every camera noticed the outage", 20);
    // A deliberate outage, not a wait for a condition: how long the source is away is the input here.
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    await cam.restart();
    const took = await waitUntil(() => [...bench.states.values()].every((s) => s.state === "STREAMING"), 30_000, "recovery: every camera STREAMING again", 5);
    times.push(took);
    console.log(`recovery run ${run}: all ${RTSP_CAMERAS} cameras STREAMING ${fmt(took)} after the source answered`);
  }
  return times;
}

function fmt(ms: number): string {
  return Number.isFinite(ms) ? `${ms.toFixed(0)} ms` : "–";
}

/** median / max of a sample. */
function stats(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? "– | –" : `${fmt(quantile(sorted, 0.5))} | ${fmt(sorted[sorted.length - 1]!)}`;
}

function table(title: string, kills: Kill[]): { median: number; max: number } {
  // A kill's figure is its slowest camera: the fleet has failed over when the last one streams.
  const perKill = (f: (k: Kill) => number[]) => kills.map((k) => Math.max(...f(k)));
  const claimed = perKill((k) => k.claimed);
  const total = perKill((k) => k.streaming);
  const start = kills.flatMap((k) => k.streaming.map((s, i) => s - k.claimed[i]!));
  console.log(`\n${title} (LEASE_TTL_MS=${TTL_MS}, ${kills.length} kills, ${kills.reduce((n, k) => n + k.cameras, 0)} camera failovers)\n`);
  console.log("| phase | median | max |");
  console.log("|---|---|---|");
  console.log(`| kill → claimed (last camera of a kill) | ${stats(claimed)} |`);
  console.log(`| claimed → STREAMING (per camera) | ${stats(start)} |`);
  if (kills.some((k) => k.ffmpegReady.length > 0)) console.log(`| FFmpeg spawn → source ready (per camera, node log) | ${stats(kills.flatMap((k) => k.ffmpegReady))} |`);
  console.log(`| **kill → STREAMING (last camera of a kill)** | ${stats(total)} |`);
  console.log(`| lease TTL | ${fmt(TTL_MS)} | |`);
  const sorted = [...total].sort((a, b) => a - b);
  return { median: quantile(sorted, 0.5), max: sorted[sorted.length - 1]! };
}

const ttlEnv: Record<string, string> = process.env.LEASE_TTL_MS !== undefined ? { LEASE_TTL_MS: String(TTL_MS) } : {};
const cleanups: Array<() => Promise<void>> = [];
const onCleanup = (fn: () => Promise<void>) => void cleanups.push(fn);
try {
  // 1. Baseline: sim actors, one server.
  const sim = await startBench();
  let baseline: Kill[];
  try {
    const env = { MAX_CAMERAS: String(SIM_CAMERAS), ...ttlEnv };
    for (let i = 1; i <= 3; i++) await sim.startNode(`s${i}`, env);
    await sim.watchLeases();
    await Promise.all(Array.from({ length: SIM_CAMERAS }, (_, i) => sim.cameras.put(`cam${i}`, JSON.stringify({ id: `cam${i}`, url: `rtsp://127.0.0.1/sim/${i}` }))));
    baseline = await runKills(sim, "s", SIM_CAMERAS, env);
  } finally {
    await sim.close();
  }

  // 2. Real cameras on a 3-server cluster.
  const cluster = await startNatsCluster({ onCleanup });
  const setup = await startBench({ natsUrls: cluster.urls });
  let real: Kill[];
  let recovery: number[];
  try {
    // The buckets exist before the nodes start, as in a running fleet (and as the fault tests do).
    await ensureJetStream(setup.nc, { replicas: 3 });
    await setup.watchLeases();
    const cam = await startRtspCamera({
      onCleanup,
      mounts: Array.from({ length: RTSP_CAMERAS }, (_, i) => ({ path: `/cam${i}`, width: 320, height: 240, fps: 10 })),
    });
    const env = { CAMFLEET_ACTOR_KIND: "camera", LOG_LEVEL: "info", ...ttlEnv };
    for (let i = 1; i <= 3; i++) await setup.startNode(`r${i}`, env);
    await Promise.all(Array.from({ length: RTSP_CAMERAS }, (_, i) => setup.cameras.put(`rtsp${i}`, JSON.stringify({ id: `rtsp${i}`, url: cam.url(`/cam${i}`) }))));
    real = await runKills(setup, "r", RTSP_CAMERAS, env);
    recovery = await runRecoveries(setup, cam);
  } finally {
    await setup.close();
  }

  console.log(`\nRecovery: the RTSP server down ${OUTAGE_MS} ms, then back (${recovery.length} outages, ${RTSP_CAMERAS} cameras)\n`);
  console.log("| phase | median | max |");
  console.log("|---|---|---|");
  console.log(`| source answering → all cameras STREAMING | ${stats(recovery)} |`);
  const recMax = Math.max(...recovery);
  console.log(`target: at most 3000 ms: ${recMax <= 3000 ? "PASS" : "FAIL"} (${fmt(recMax)})`);

  const b = table(`Baseline: ${SIM_CAMERAS} sim cameras, 3 nodes, one nats-server`, baseline);
  const r = table(`Real: ${RTSP_CAMERAS} RTSP cameras (320x240@10), 3 nodes, 3-server NATS cluster`, real);
  console.log(`\nbaseline kill → STREAMING: median ${fmt(b.median)}, max ${fmt(b.max)}`);
  console.log(
    `target (real cameras): median at most 3000 ms: ${r.median <= 3000 ? "PASS" : "FAIL"} (${fmt(r.median)}); ` +
      `slowest at most 5000 ms: ${r.max <= 5000 ? "PASS" : "FAIL"} (${fmt(r.max)})`,
  );
} finally {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
}
