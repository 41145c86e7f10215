// Per-camera cost of the real camera actor: CPU and memory (PSS) of the whole
// actor — its share of the node process plus its FFmpeg — against N bare
// `ffmpeg -rtsp_transport tcp -i <url> -map 0:v:0 -c:v copy -f rtp rtp://…`
// copies of the same stream in the same run (the floor).
//
// All cameras read ONE shared RTSP mount (GStreamer, 1280x720@25, snow, 2000
// kbit/s); one extra client stays attached for the whole run. The camera side
// is a nats-server + one `camfleet node` (CAMFLEET_ACTOR_KIND=camera) that
// publishes every camera over WHIP to a werift receiver in a separate process
// (bench/whip-receiver.ts), which counts RTP packets per camera.
//
// Targets (issue): CPU per camera ≤ 4× the floor, PSS ≤ 24 MB per camera,
// 24 cameras without falling behind (packet rate within 10 % of the floor's).
// CPU and PSS are judged from JUDGED_FROM cameras up, where the issue's
// reference figures are: below, a node's fixed cost (one Node process, ~45 MB
// PSS and ~1 % of a core when idle) lands on one or a few cameras, and is
// printed but not judged. The packet rate is judged at every count.
// BENCH_COUNTS (default "1,8,24"), BENCH_WINDOW_S (20), BENCH_ROUNDS (3: floor/camfleet pairs, medians judged), BENCH_PROFILE (1; 0 skips
// the profile run, "only" runs nothing else), BENCH_PROFILE_KEEP (a path: keep the .cpuprofile), BENCH_NODE_FLAGS (Node flags
// for the camfleet node only, appended to the launcher's: CAMFLEET_NODE_FLAGS).
import { createSocket, type Socket } from "node:dgram";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { superviseSpawn, type SupervisedChild } from "../runtime/infra/child-process.ts";
import { ControlClient } from "../runtime/index.ts";
import { NatsServerProcess } from "../runtime/infra/nats-server.ts";
import { runCamfleet } from "../test/helpers/camfleet-process.ts";
import { startRtspCamera, type RtspCamera } from "../test/helpers/rtsp-camera.ts";
import { quantile, waitUntil } from "./fleet-bench.ts";
import { busiestProfile, CLK_TCK, cpuTicks, statFields, topSelf } from "./proc-profile.ts";

const COUNTS = (process.env.BENCH_COUNTS ?? "1,8,24").split(",").map((s) => Number(s.trim())).filter((n) => Number.isInteger(n) && n > 0);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 20);
/** Floor/camfleet pairs per camera count; the targets are judged on the medians. */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const SETTLE_S = 5;
const PROFILE = process.env.BENCH_PROFILE !== "0";
/** Only the profile run (at the largest BENCH_COUNTS), no measurements. */
const PROFILE_ONLY = process.env.BENCH_PROFILE === "only";
const FFMPEG = "/usr/bin/ffmpeg";
/** The actor's RTP packet size (actors/camera/ingest.ts); the floor uses the same so packet rates compare. */
const PKT_SIZE = 1200;
const CAMFLEET_BIN = fileURLToPath(new URL("../bin/camfleet", import.meta.url));
const RECEIVER = fileURLToPath(new URL("./whip-receiver.ts", import.meta.url));
const MOUNT = { path: "/bench", width: 1280, height: 720, fps: 25, bitrate: 2000, pattern: "snow" };
const TARGET_CPU_RATIO = 4;
const TARGET_PSS_MB = 24;
const TARGET_RATE = 0.9;
/** CPU and PSS targets apply from this many cameras (the issue's reference figures are at 8). */
const JUDGED_FROM = 8;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: Array<() => Promise<void>> = [];
const onCleanup = (fn: () => Promise<unknown> | void) => void cleanups.push(async () => void (await fn()));
/** Every pid this benchmark started (directly or as a node's child), checked for leftovers at the end. */
const ourPids = new Set<number>();

// ------------------------------------------------------------------ /proc

function pssKb(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
/**
 * PSS of `pid` as if no other process mapped the files it maps: its file-backed
 * pages (the node binary, mostly) charged to it in full. Here the node shares
 * them with the benchmark and the WHIP receiver, both Node too; on a host whose
 * only Node process is the camfleet node, this is its PSS (libc's few MB, shared
 * with everything, make it a slight overestimate).
 */
function unsharedFilePssKb(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return field("Pss") - field("Pss_File") + (field("Rss") - field("Anonymous"));
  } catch {
    return 0;
  }
}
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const f = statFields(Number(e));
    if (f && f[0] !== "Z" && Number(f[1]) === ppid) out.push(Number(e));
  }
  return out;
}
function alive(pid: number): boolean {
  const f = statFields(pid);
  return f !== undefined && f[0] !== "Z";
}
function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "?";
  }
}

interface Usage {
  /** CPU, % of one core, summed over the processes. */
  cpuPct: number;
  pssMb: number;
  procs: number;
}
/** CPU over [t0, t1] of the processes alive at both ends, and their PSS at t1. */
function usage(before: Map<number, number>, after: Map<number, number>, seconds: number): Usage {
  let ticks = 0;
  let pss = 0;
  let procs = 0;
  for (const [pid, t1] of after) {
    const t0 = before.get(pid);
    if (t0 === undefined) continue;
    ticks += t1 - t0;
    pss += pssKb(pid);
    procs++;
  }
  return { cpuPct: (ticks / CLK_TCK / seconds) * 100, pssMb: pss / 1024, procs };
}
function ticksOf(pids: number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const p of pids) {
    const t = cpuTicks(p);
    if (t !== undefined) m.set(p, t);
  }
  return m;
}

// ------------------------------------------------------------------ helpers

async function startReceiver(): Promise<{ origin: string; stats(): Promise<{ cameras: Record<string, { packets: number; bytes: number }>; cpu_us: number }>; pid: number }> {
  const run = superviseSpawn(process.execPath, ["--import", "tsx", RECEIVER], { stdio: ["ignore", "pipe"] });
  onCleanup(() => run.terminate(5000));
  if (run.child.pid) ourPids.add(run.child.pid);
  const origin = await new Promise<string>((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`WHIP receiver: no READY line\n${run.stderrTail()}`)), 20_000);
    run.child.stdout!.setEncoding("utf8").on("data", (c: string) => {
      buf += c;
      const m = /READY (\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void run.exited.then(() => reject(new Error(`WHIP receiver exited\n${run.stderrTail()}`)));
  });
  return {
    origin,
    pid: run.child.pid!,
    stats: async () => (await (await fetch(`${origin}/stats`)).json()) as { cameras: Record<string, { packets: number; bytes: number }>; cpu_us: number },
  };
}

function bareArgs(url: string, port: number): string[] {
  return ["-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url, "-map", "0:v:0", "-c:v", "copy", "-f", "rtp", `rtp://127.0.0.1:${port}?pkt_size=${PKT_SIZE}`];
}

interface PhaseResult {
  usage: Usage;
  /** Packets per second per camera over the window, sorted. */
  rates: number[];
  restarts: number;
}

/** N bare ffmpeg copies, each sending RTP to a UDP socket of ours that counts packets. */
async function measureFloor(cam: RtspCamera, n: number): Promise<PhaseResult> {
  const sockets: Socket[] = [];
  const packets: number[] = [];
  const runs: SupervisedChild[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createSocket({ type: "udp4", recvBufferSize: 1 << 20 });
      packets.push(0);
      s.on("message", () => packets[i]!++);
      await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
      sockets.push(s);
    }
    for (let i = 0; i < n; i++) {
      const run = superviseSpawn(FFMPEG, bareArgs(cam.url(MOUNT.path), sockets[i]!.address().port), { tailLines: 10 });
      if (run.child.pid) ourPids.add(run.child.pid);
      runs.push(run);
    }
    await waitUntil(() => packets.every((p) => p > 0), 30_000, `floor ×${n}: all copies sending`, 100);
    await sleep(SETTLE_S * 1000);
    const pids = runs.map((r) => r.child.pid!);
    const p0 = [...packets];
    const b = ticksOf(pids);
    const t0 = performance.now();
    await sleep(WINDOW_S * 1000);
    const a = ticksOf(pids);
    const p1 = [...packets];
    const secs = (performance.now() - t0) / 1000;
    const u = usage(b, a, secs);
    const rates = p1.map((p, i) => (p - p0[i]!) / secs).sort((x, y) => x - y);
    return { usage: u, rates, restarts: n - u.procs };
  } finally {
    await Promise.all(runs.map((r) => r.terminate(5000)));
    for (const s of sockets) s.close();
  }
}

interface NodeHandle {
  pid: number;
}

interface CamfleetPhase {
  nats: NatsServerProcess;
  nc: NatsConnection;
  node: NodeHandle;
  ids: string[];
  stop(): Promise<void>;
}

/** A nats-server and one camera node with `n` cameras, all STREAMING and publishing to the receiver. */
async function startCamfleet(cam: RtspCamera, whipOrigin: string, receiverStats: () => Promise<{ cameras: Record<string, { packets: number }> }>, n: number, profDir?: string): Promise<CamfleetPhase> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-bench-camera-"));
  const nats = new NatsServerProcess({ name: `bench-camera-${n}`, storeDir: join(dir, "store") });
  const local: Array<() => Promise<unknown>> = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const fn of local.reverse()) await fn().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  onCleanup(stop);
  await nats.start();
  local.push(() => nats.stop());
  const env = {
    NATS_URL: nats.url,
    NODE_ID: "bench-camera",
    HTTP_PORT: "0",
    CAMFLEET_ACTOR_KIND: "camera",
    MAX_CAMERAS: "64",
    WHIP_URL: `${whipOrigin}/whip/{camera}`,
    LOG_LEVEL: "info",
    // Node/V8 flags for the camfleet node only, after the launcher's own (e.g. "--max-semi-space-size=16"), to compare memory settings.
    CAMFLEET_NODE_FLAGS: process.env.BENCH_NODE_FLAGS ?? "",
  };
  let node: NodeHandle;
  if (profDir === undefined) {
    const proc = runCamfleet(["node"], { env, onCleanup: (fn) => void local.push(fn) });
    await proc.waitForLog((l) => l.msg === "node ready", 30_000);
    node = { pid: proc.child.pid! };
  } else {
    // --cpu-prof is not allowed in NODE_OPTIONS: the launcher puts CAMFLEET_NODE_FLAGS on node's command line.
    const flags = `${env.CAMFLEET_NODE_FLAGS} --cpu-prof --cpu-prof-dir=${profDir}`;
    const run = superviseSpawn(CAMFLEET_BIN, ["node"], { env: { ...process.env, ...env, CAMFLEET_NODE_FLAGS: flags }, stdio: ["ignore", "pipe"] });
    local.push(() => run.terminate(15_000)); // SIGTERM: the node exits and writes its profile
    await new Promise<void>((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`profiled node: not ready\n${run.stderrTail()}`)), 30_000);
      run.child.stdout!.setEncoding("utf8").on("data", (c: string) => {
        buf += c;
        if (buf.includes('"msg":"node ready"')) {
          clearTimeout(timer);
          buf = "";
          resolve();
        } else if (buf.length > 1 << 16) buf = buf.slice(-1024);
      });
      void run.exited.then(() => reject(new Error(`profiled node exited\n${run.stderrTail()}`)));
    });
    node = { pid: run.child.pid! };
  }
  ourPids.add(node.pid);
  const nc = await connect({ servers: nats.url });
  local.push(() => nc.close());
  const client = new ControlClient(nc);
  const ids = Array.from({ length: n }, (_, i) => `n${n}c${String(i).padStart(2, "0")}`);
  await Promise.all(ids.map((id) => client.putCamera({ id, url: cam.url(MOUNT.path), publish: "always" })));
  await waitUntil(
    async () => {
      const st = await Promise.all(ids.map((id) => client.cameraStatus(id).catch(() => undefined)));
      if (!st.every((s) => s?.state === "STREAMING" && s.publishing)) return false;
      const rx = await receiverStats();
      return ids.every((id) => (rx.cameras[id]?.packets ?? 0) > 0);
    },
    90_000,
    `camfleet ×${n}: all cameras STREAMING and publishing`,
    500,
  );
  for (const p of childrenOf(node.pid)) ourPids.add(p);
  return { nats, nc, node, ids, stop };
}

async function measureCamfleet(cam: RtspCamera, rx: Awaited<ReturnType<typeof startReceiver>>, n: number): Promise<PhaseResult & { node: Usage; ffmpeg: Usage; nodeAloneMb: number; rxCpuPct: number }> {
  const phase = await startCamfleet(cam, rx.origin, rx.stats, n);
  try {
    await sleep(SETTLE_S * 1000);
    const nodePid = phase.node.pid;
    const kids0 = childrenOf(nodePid);
    const s0 = await rx.stats();
    const bn = ticksOf([nodePid]);
    const bk = ticksOf(kids0);
    const t0 = performance.now();
    await sleep(WINDOW_S * 1000);
    const an = ticksOf([nodePid]);
    const kids1 = childrenOf(nodePid);
    const ak = ticksOf(kids1);
    const s1 = await rx.stats();
    const secs = (performance.now() - t0) / 1000;
    for (const p of kids1) ourPids.add(p);
    const nodeU = usage(bn, an, secs);
    const nodeAloneMb = unsharedFilePssKb(nodePid) / 1024;
    const ffU = usage(bk, ak, secs);
    const ffmpegs = kids1.filter((p) => comm(p) === "ffmpeg").length;
    if (ffmpegs !== n) console.warn(`camfleet ×${n}: ${ffmpegs} ffmpeg children of the node (expected ${n})`);
    const rates = phase.ids.map((id) => ((s1.cameras[id]?.packets ?? 0) - (s0.cameras[id]?.packets ?? 0)) / secs).sort((x, y) => x - y);
    return {
      usage: { cpuPct: nodeU.cpuPct + ffU.cpuPct, pssMb: nodeU.pssMb + ffU.pssMb, procs: nodeU.procs + ffU.procs },
      node: nodeU,
      nodeAloneMb,
      ffmpeg: ffU,
      rates,
      restarts: kids1.filter((p) => !kids0.includes(p)).length,
      rxCpuPct: ((s1.cpu_us - s0.cpu_us) / 1e6 / secs) * 100,
    };
  } finally {
    await phase.stop();
  }
}

/** Runs the node under --cpu-prof with n cameras; returns the top self-time functions of the steady window. */
async function profileNode(cam: RtspCamera, rx: Awaited<ReturnType<typeof startReceiver>>, n: number): Promise<string[]> {
  const profDir = await mkdtemp(join(tmpdir(), "camfleet-bench-prof-"));
  onCleanup(() => rm(profDir, { recursive: true, force: true }));
  const phase = await startCamfleet(cam, rx.origin, rx.stats, n, profDir);
  let w0 = 0n;
  let w1 = 0n;
  try {
    await sleep(SETTLE_S * 1000);
    w0 = process.hrtime.bigint() / 1000n; // µs, CLOCK_MONOTONIC like V8's profile timestamps
    await sleep(Math.min(WINDOW_S, 15) * 1000);
    w1 = process.hrtime.bigint() / 1000n;
  } finally {
    await phase.stop(); // SIGTERM: the node writes its profile on exit
  }
  const best = await busiestProfile(profDir);
  if (best === undefined) return ["(no .cpuprofile written)"];
  if (process.env.BENCH_PROFILE_KEEP) await writeFile(process.env.BENCH_PROFILE_KEEP, JSON.stringify(best));
  return topSelf(best, { from: Number(w0), to: Number(w1) });
}

// ------------------------------------------------------------------ main

const f1 = (x: number) => x.toFixed(1);
const mark = (ok: boolean) => (ok ? "PASS" : "FAIL");
let failed = false;
try {
  const rx = await startReceiver();
  const cam = await startRtspCamera({ onCleanup, shared: true, mounts: [MOUNT] });
  if (cam.pid) ourPids.add(cam.pid);
  // One client attached for the whole run: a shared stream can stall as clients come and go.
  const watcher = superviseSpawn(FFMPEG, ["-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", cam.url(MOUNT.path), "-map", "0:v:0", "-c:v", "copy", "-f", "null", "-"], { tailLines: 10 });
  onCleanup(() => watcher.terminate(5000));
  if (watcher.child.pid) ourPids.add(watcher.child.pid);
  await sleep(2000);

  console.log(`\nCamera actor cost: ${MOUNT.width}x${MOUNT.height}@${MOUNT.fps} H.264 ~${MOUNT.bitrate} kbit/s (snow), one shared RTSP mount; window ${WINDOW_S} s after ${SETTLE_S} s settle; CPU in % of one core; PSS from smaps_rollup\n`);
  const out: string[] = [];
  const totals: Array<{ n: number; cpu: number; pss: number }> = [];
  for (const n of PROFILE_ONLY ? [] : COUNTS) {
    // Floor and camfleet alternate ROUNDS times; targets are judged on the medians, because
    // one pair of windows on a 2-core machine moves the CPU ratio by ±0.3×.
    const rounds: Array<{ floor: Awaited<ReturnType<typeof measureFloor>>; cf: Awaited<ReturnType<typeof measureCamfleet>> }> = [];
    for (let r = 1; r <= ROUNDS; r++) {
      console.log(`… N=${n}, round ${r}/${ROUNDS}: floor (${n} bare ffmpeg copies)`);
      const floor = await measureFloor(cam, n);
      console.log(`… N=${n}, round ${r}/${ROUNDS}: camfleet node with ${n} camera actors`);
      rounds.push({ floor, cf: await measureCamfleet(cam, rx, n) });
    }
    const med = (f: (x: (typeof rounds)[number]) => number) => quantile(rounds.map(f).sort((a, b) => a - b), 0.5);
    const ratios = rounds.map(({ floor, cf }) => cf.usage.cpuPct / floor.usage.cpuPct);
    const ratio = quantile([...ratios].sort((a, b) => a - b), 0.5);
    const fCpu = med((x) => x.floor.usage.cpuPct) / n;
    const fPss = med((x) => x.floor.usage.pssMb) / n;
    const cCpu = med((x) => x.cf.usage.cpuPct) / n;
    const cPss = med((x) => x.cf.usage.pssMb) / n;
    const floorRate = med((x) => quantile(x.floor.rates, 0.5));
    const minRate = Math.min(...rounds.map((x) => x.cf.rates[0] ?? 0));
    const judged = n >= JUDGED_FROM;
    const cpuOk = ratio <= TARGET_CPU_RATIO;
    const pssOk = cPss <= TARGET_PSS_MB;
    const rateOk = minRate >= TARGET_RATE * floorRate;
    failed ||= !rateOk || (judged && !(cpuOk && pssOk));
    const verdict = (ok: boolean) => (judged ? mark(ok) : `not judged below ${JUDGED_FROM} cameras (${mark(ok)})`);
    const last = rounds.at(-1)!;
    totals.push({ n, cpu: med((x) => x.cf.usage.cpuPct), pss: med((x) => x.cf.usage.pssMb) });
    const block = out.length;
    out.push(
      `### N = ${n} (median of ${ROUNDS} rounds)`,
      "",
      "| per camera | camfleet (node share + ffmpeg) | floor (bare ffmpeg) | ratio | target |",
      "|---|---|---|---|---|",
      `| CPU, % of a core | ${f1(cCpu)} (node ${f1(med((x) => x.cf.node.cpuPct) / n)} + ffmpeg ${f1(med((x) => x.cf.ffmpeg.cpuPct) / n)}) | ${f1(fCpu)} | ${ratio.toFixed(2)}× | ≤ ${TARGET_CPU_RATIO}× floor: ${verdict(cpuOk)} |`,
      `| PSS, MB | ${f1(cPss)} (node ${f1(med((x) => x.cf.node.pssMb) / n)} + ffmpeg ${f1(med((x) => x.cf.ffmpeg.pssMb) / n)}) | ${f1(fPss)} | ${(cPss / fPss).toFixed(2)}× | ≤ ${TARGET_PSS_MB} MB: ${verdict(pssOk)} |`,
      `| RTP packets/s, lowest camera / floor median | ${f1(minRate)} (at the WHIP receiver) | ${f1(floorRate)} | ${(minRate / floorRate).toFixed(2)}× | ≥ ${TARGET_RATE}× floor: ${mark(rateOk)} |`,
      "",
      `If the node were the host's only Node process (its file pages not shared with the benchmark's): node ${f1(med((x) => x.cf.nodeAloneMb))} MB, ` +
        `${f1(med((x) => x.cf.nodeAloneMb - x.cf.node.pssMb + x.cf.usage.pssMb) / n)} MB per camera (not judged: the issue's PSS is the one above).`,
      "",
      `CPU ratio per round: ${ratios.map((x) => `${x.toFixed(2)}×`).join(", ")}; last round: node total ${f1(last.cf.node.cpuPct)} % CPU, ${f1(last.cf.node.pssMb)} MB PSS, ` +
        `${last.cf.ffmpeg.procs} ffmpeg children, ${last.cf.restarts} new during the window; floor copies lost: ${last.floor.restarts}; WHIP receiver (not counted) ${f1(last.cf.rxCpuPct)} % CPU`,
      "",
    );
    console.log(out.slice(block).join("\n"));
  }
  // Not a target: what one more camera costs once the node's fixed share is paid.
  for (let i = 1; i < totals.length; i++) {
    const a = totals[i - 1]!;
    const b = totals[i]!;
    if (b.n === a.n) continue;
    out.push(`marginal cost per added camera, N=${a.n} → ${b.n}: CPU ${f1((b.cpu - a.cpu) / (b.n - a.n))} % of a core, PSS ${f1((b.pss - a.pss) / (b.n - a.n))} MB`);
  }
  if (totals.length > 1) out.push("");
  const maxN = Math.max(...COUNTS);
  let prof: string[] = [];
  if (PROFILE) {
    console.log(`… CPU profile of the node with ${maxN} cameras (node --cpu-prof, separate run)`);
    prof = await profileNode(cam, rx, maxN);
  }
  console.log("\n=== results ===\n");
  console.log(out.join("\n"));
  if (prof.length) console.log(`### node CPU profile, N = ${maxN}: top 10 self time\n\n${prof.join("\n")}\n`);
  if (!PROFILE_ONLY) console.log(`overall: ${failed ? "FAIL" : "PASS"}`);
} finally {
  for (const fn of cleanups.reverse()) await fn().catch((err: unknown) => console.error("cleanup:", err));
  await sleep(500);
  const left = [...ourPids].filter(alive);
  if (left.length) console.error(`left running: ${left.map((p) => `${p} (${comm(p)})`).join(", ")}`);
  else console.log(`cleanup: none of the ${ourPids.size} processes started is left`);
}
