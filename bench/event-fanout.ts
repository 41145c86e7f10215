// Event fan-out through one gateway (issue 13, "Benchmark"): JetStream
// publish of status and detection events → 100 SSE clients on GET /events,
// latency from publish to receipt at each client, p50/p99/max, at a few event
// rates; target p99 ≤ 50 ms. Baseline in the same run: a plain JetStream
// ordered consumer per stream (what the gateway's hubs are) in a process of
// its own, started like the clients' processes: the floor of JetStream
// delivery on this machine at that moment. Then the gateway's memory while waves of clients connect and
// leave.
//
// Set-up: a nats-server and one `camfleet gateway` process as users run it
// (no node is needed: this process publishes the events itself, valid by the
// schemas, half status and half detection, over 10 cameras). The SSE clients
// run in BENCH_CLIENT_PROCS child processes (bench/sse-clients.ts), each
// client on its own connection, no filter (both streams); the baseline in one
// more such process.
//
// Latency: each event's `ts` is the publish time (this process's wall clock,
// read just before js.publish); a client subtracts it from its own wall clock
// on receipt. Both processes read the same system clock; `ts` is whole ms
// (the schema's), so each sample is off by up to ±0.5 ms, the baseline's
// alike.
//
// Memory: BENCH_WAVES waves of BENCH_CLIENTS clients: each connects, gets
// events at BENCH_WAVE_RATE/s for BENCH_WAVE_HOLD_S, leaves; VmRSS of the
// gateway (/proc/<pid>/status) and its V8 heap in use (its /metrics,
// camfleet_process_nodejs_heap_size_used_bytes) are read with the clients
// connected and after they left (once the gateway's consumers on the streams
// are gone again). Flat: the last wave's RSS after leaving is at most 10 %
// above the first wave's after warm-up (wave 2; wave 1 is the warm-up), and
// the hubs' consumers are all gone. Less is fine: that is memory given back.
//
// BENCH_PROFILE=1 runs the gateway with --cpu-prof and prints where its time
// went (all phases together); BENCH_NODE_FLAGS adds Node flags to the gateway.
//
//   npm run bench:fanout
//   BENCH_RATES=10,100,500 BENCH_WINDOW_S=10 BENCH_CLIENTS=100 BENCH_WAVES=10 npm run bench:fanout
//
// On this 2-core machine the clients, the gateway, nats-server and this
// publisher share the CPUs (and other work may run): read the CPU columns.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { loadavg } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { STREAMS, subjects } from "../subjects/index.ts";
import { detectionEvent, statusEvent } from "../test/helpers/detections.ts";
import { quantile, waitUntil } from "./fleet-bench.ts";
import { gatewayFlags, HOST, mb, onCleanup, printGatewayProfile, rssBytes, runBench, sleep, startBenchNats, startGatewayProcess } from "./gateway-procs.ts";
import { CLK_TCK, cpuTicks } from "./proc-profile.ts";

const RATES = (process.env.BENCH_RATES ?? "10,100,500").split(",").map(Number).filter((n) => Number.isFinite(n) && n > 0);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 10);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 100);
const CLIENT_PROCS = Math.max(1, Number(process.env.BENCH_CLIENT_PROCS ?? 2));
const WAVES = Number(process.env.BENCH_WAVES ?? 10);
const WAVE_RATE = Number(process.env.BENCH_WAVE_RATE ?? 100);
const WAVE_HOLD_S = Number(process.env.BENCH_WAVE_HOLD_S ?? 3);
const TARGET_P99_MS = 50;
const FLAT_TOLERANCE = 0.1;
const SETTLE_S = 2;
const CAMERAS = 10;
const CLIENTS_SCRIPT = fileURLToPath(new URL("./sse-clients.ts", import.meta.url));

// ------------------------------------------------------------ client processes

type Buckets = Array<[number, number]>;
interface Report {
  sse: Buckets;
  sseEvents: number;
  nats: Buckets;
  natsEvents: number;
  ended: number;
  errors: number;
  lastErrors: string[];
  open: number;
}

/** One bench/sse-clients.ts child: commands in, one JSON answer per command out. */
class ClientProc {
  private waiting: Array<(answer: Record<string, unknown>) => void> = [];
  private stderr: string[] = [];

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let answer: Record<string, unknown>;
      try {
        answer = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      this.waiting.shift()?.(answer);
    });
    child.stderr!.setEncoding("utf8").on("data", (c: string) => {
      this.stderr.push(...c.split("\n").filter(Boolean));
      this.stderr.splice(0, Math.max(0, this.stderr.length - 20));
    });
  }

  static start(gatewayUrl: string, natsUrl: string): ClientProc {
    // stdin stays open: its end tells the child that this process is gone.
    const child = spawn(process.execPath, ["--import", "tsx", CLIENTS_SCRIPT, gatewayUrl, natsUrl], { stdio: ["pipe", "pipe", "pipe"], env: process.env });
    const p = new ClientProc(child);
    onCleanup(() => p.stop());
    return p;
  }

  get pid(): number {
    return this.child.pid!;
  }

  async send(cmd: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    if (this.child.exitCode !== null) throw new Error(`SSE client process exited: ${this.stderr.at(-1) ?? "no output"}`);
    let timer: NodeJS.Timeout | undefined;
    const answer = await Promise.race([
      new Promise<Record<string, unknown>>((resolve) => {
        this.waiting.push(resolve);
        this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
      }),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`SSE clients: no answer to ${cmd.cmd} within ${timeoutMs} ms; ${this.stderr.at(-1) ?? ""}`)), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
    if (typeof answer.error === "string") throw new Error(`SSE clients: ${cmd.cmd}: ${answer.error}`);
    return answer;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** All client processes together. */
class Clients {
  constructor(readonly procs: ClientProc[]) {}

  /** Opens `n` clients spread over the processes. */
  async open(n: number): Promise<void> {
    await Promise.all(this.procs.map((p, i) => p.send({ cmd: "open", n: Math.floor(n / this.procs.length) + (i < n % this.procs.length ? 1 : 0) })));
  }

  async all(cmd: string): Promise<Array<Record<string, unknown>>> {
    return Promise.all(this.procs.map((p) => p.send({ cmd })));
  }

  async report(): Promise<Report[]> {
    return (await this.all("report")).map((a) => a.report as Report);
  }

  cpuTicks(): number {
    return this.procs.reduce((a, p) => a + (cpuTicks(p.pid) ?? 0), 0);
  }
}

/** Merged 0.1 ms buckets → sorted expansion is too big; quantiles straight from the counts. */
function quantiles(parts: Buckets[]): { n: number; p50: number; p99: number; max: number } {
  const counts = new Map<number, number>();
  for (const part of parts) for (const [b, c] of part) counts.set(b, (counts.get(b) ?? 0) + c);
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const n = keys.reduce((a, k) => a + counts.get(k)!, 0);
  const at = (q: number) => {
    const rank = Math.min(n - 1, Math.floor(q * n));
    let seen = 0;
    for (const k of keys) {
      seen += counts.get(k)!;
      if (seen > rank) return k / 10;
    }
    return NaN;
  };
  return { n, p50: at(0.5), p99: at(0.99), max: keys.length > 0 ? keys[keys.length - 1]! / 10 : NaN };
}

// ------------------------------------------------------------------ publisher

/** Publishes `rate` events/s to JetStream for `seconds`, alternating status and detection; resolves with the number acknowledged. */
async function publish(js: ReturnType<typeof jetstream>, rate: number, seconds: number): Promise<{ published: number; failed: number }> {
  let published = 0;
  let failed = 0;
  let k = 0;
  const pending = new Set<Promise<unknown>>();
  const t0 = performance.now();
  // Ticks of 10 ms; each publishes what is due by then, so the rate holds even when a tick runs late.
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = (performance.now() - t0) / 1000;
      const due = Math.min(rate * seconds, Math.floor(elapsed * rate));
      while (k < due) {
        const camera = `cam-${k % CAMERAS}`;
        const source = { camera, tenant: "default", site: "default" };
        const event = k % 2 === 0 ? statusEvent(source) : detectionEvent(source);
        const subject = k % 2 === 0 ? subjects.status(camera) : subjects.detections(camera);
        event.ts = Math.round(performance.timeOrigin + performance.now());
        const p = js.publish(subject, JSON.stringify(event)).then(
          () => void published++,
          () => void failed++,
        );
        pending.add(p);
        void p.finally(() => pending.delete(p));
        k++;
      }
      if (k >= rate * seconds) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
  await Promise.all(pending);
  return { published, failed };
}

// ------------------------------------------------------------------ main

/**
 * Events the gateway has not read from JetStream yet: for each of its hubs'
 * consumers (those with a filter subject; the baseline's have none), the
 * stream's last sequence minus the last one delivered to it.
 */
async function gatewayLag(jsm: Awaited<ReturnType<typeof jetstreamManager>>): Promise<number> {
  let lag = 0;
  for (const stream of [STREAMS.status, STREAMS.detections]) {
    const last = (await jsm.streams.info(stream)).state.last_seq;
    for await (const ci of jsm.consumers.list(stream)) {
      const filtered = (ci.config.filter_subjects?.length ?? 0) > 0 || (ci.config.filter_subject ?? "") !== "";
      if (filtered) lag += Math.max(0, last - ci.delivered.stream_seq);
    }
  }
  return lag;
}

/**
 * Where a backlog sits, from the kernel's socket queues (`ss`, iproute2): bytes
 * the clients have not read yet (Recv-Q of their sockets to the gateway) and
 * bytes the gateway handed to the kernel that no client took yet (Send-Q of its
 * sockets). Bytes still in the gateway's own buffers are in neither.
 */
function socketBacklog(port: number): { clientsUnread: number; gatewayUnsent: number } | undefined {
  const sum = (filter: string, column: 0 | 1) => {
    const out = execFileSync("ss", ["-tnH", "state", "established", filter, `${HOST}:${port}`], { encoding: "utf8" });
    return out.split("\n").reduce((a, line) => a + (Number(line.trim().split(/\s+/)[column]) || 0), 0);
  };
  try {
    return { clientsUnread: sum("dst", 0), gatewayUnsent: sum("src", 1) };
  } catch {
    return undefined; // no ss here
  }
}

async function heapUsed(url: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text().catch(() => "");
  const m = /^camfleet_process_nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([\d.e+]+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

interface RatePhase {
  rate: number;
  published: number;
  failed: number;
  sse: ReturnType<typeof quantiles>;
  nats: ReturnType<typeof quantiles>;
  /** SSE events received / (published × clients). */
  delivered: number;
  ended: number;
  errors: number;
  gatewayCpu: number;
  /** Gateway CPU time per SSE event delivered, µs: what the fan-out costs, whatever else the machine does. */
  gatewayUsPerDelivery: number;
  clientsCpu: number;
  /** 1-minute load average at the end of the phase. */
  load: number;
  /** Socket queues when the last event of the window was published. */
  backlog: ReturnType<typeof socketBacklog>;
  /** Events not yet read by the gateway from JetStream then. */
  lag: number;
}

async function main(): Promise<void> {
  const { nats, nc } = await startBenchNats("bench-fanout");
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const { env, profDir } = await gatewayFlags();
  const { gw, url, pid: gwPid } = await startGatewayProcess(nats.url, env);
  const port = Number(new URL(url).port);
  const clients = new Clients(Array.from({ length: CLIENT_PROCS }, () => ClientProc.start(url, nats.url)));
  const baseline = ClientProc.start(url, nats.url);

  console.log(
    `event fan-out benchmark: ${CLIENTS} SSE clients of one \`camfleet gateway\` process on GET /events (no filter) in ${CLIENT_PROCS} client process(es), ` +
      `rates ${RATES.join(", ")} events/s (half status, half detection), ${WINDOW_S} s each; baseline: a JetStream ordered consumer per stream in a process of its own`,
  );
  await clients.open(CLIENTS);
  await baseline.send({ cmd: "nats" });
  // Warm-up: the hubs' consumers exist, JIT of the paths.
  await publish(js, 50, SETTLE_S);
  await sleep(500);

  const phases: RatePhase[] = [];
  for (const rate of RATES) {
    await clients.all("reset");
    await baseline.send({ cmd: "reset" });
    const g0 = cpuTicks(gwPid) ?? 0;
    const c0 = clients.cpuTicks();
    const w0 = performance.now();
    const { published, failed } = await publish(js, rate, WINDOW_S);
    const backlog = socketBacklog(port);
    const lag = await gatewayLag(jsm);
    // Whatever is still on its way: until every client has everything, at most 10 s.
    let reports: Report[] = [];
    let base: Report | undefined;
    await waitUntil(
      async () => {
        reports = await clients.report();
        base = (await baseline.send({ cmd: "report" })).report as Report;
        return reports.reduce((a, r) => a + r.sseEvents, 0) >= published * CLIENTS && base.natsEvents >= published;
      },
      10_000,
      "events delivered",
      200,
    ).catch(() => undefined);
    const seconds = (performance.now() - w0) / 1000;
    const sseEvents = reports.reduce((a, r) => a + r.sseEvents, 0);
    phases.push({
      rate,
      published,
      failed,
      sse: quantiles(reports.map((r) => r.sse)),
      nats: quantiles(base === undefined ? [] : [base.nats]),
      delivered: published > 0 ? sseEvents / (published * CLIENTS) : 0,
      ended: reports.reduce((a, r) => a + r.ended, 0),
      errors: reports.reduce((a, r) => a + r.errors, 0),
      gatewayCpu: (((cpuTicks(gwPid) ?? g0) - g0) / CLK_TCK / seconds) * 100,
      gatewayUsPerDelivery: sseEvents > 0 ? ((((cpuTicks(gwPid) ?? g0) - g0) / CLK_TCK) * 1e6) / sseEvents : NaN,
      clientsCpu: ((clients.cpuTicks() - c0) / CLK_TCK / seconds) * 100,
      load: loadavg()[0]!,
      backlog,
      lag,
    });
    const errs = [...reports, ...(base === undefined ? [] : [base])].flatMap((r) => r.lastErrors);
    if (errs.length > 0) console.log(`rate ${rate}: client errors: ${errs.join("; ")}`);
  }
  await clients.all("close");

  // Memory: waves of clients connecting and leaving.
  const consumers = async () => {
    let n = 0;
    for (const s of [STREAMS.status, STREAMS.detections]) n += (await jsm.streams.info(s)).state.consumer_count;
    return n;
  };
  // What stays: the baseline's two ordered consumers; the hubs' go when their last client leaves.
  const idleConsumers = await waitUntil(async () => (await consumers()) <= 2, 10_000, "the gateway's hubs closed", 100).then(
    () => consumers(),
    () => consumers(),
  );
  const waves: Array<{ wave: number; rssOn?: number; heapOn?: number; rssOff?: number; heapOff?: number; leftConsumers: number }> = [];
  const rss0 = rssBytes(gwPid);
  const heap0 = await heapUsed(url);
  for (let wave = 1; wave <= WAVES; wave++) {
    await clients.open(CLIENTS);
    await publish(js, WAVE_RATE, WAVE_HOLD_S);
    const rssOn = rssBytes(gwPid);
    const heapOn = await heapUsed(url);
    await clients.all("close");
    // Left: the gateway noticed once its hubs (and their consumers) are gone.
    await waitUntil(async () => (await consumers()) <= idleConsumers, 10_000, "clients gone", 100).catch(() => undefined);
    await sleep(500);
    waves.push({ wave, rssOn, heapOn, rssOff: rssBytes(gwPid), heapOff: await heapUsed(url), leftConsumers: (await consumers()) - idleConsumers });
  }

  // ------------------------------------------------------------ report
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
  console.log("");
  console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(", ")} (2 cores)`);
  console.log("| events/s | path | p50 ms | p99 ms | max ms | samples | delivered | dropped (end) | gateway CPU % | gateway CPU µs per delivery | clients' CPU % | load avg (1 min) | events not yet read by the gateway | unsent by gateway MB | unread by clients MB |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const p of phases) {
    console.log(
      `| ${p.rate} | gateway SSE, ${CLIENTS} clients | ${f(p.sse.p50)} | ${f(p.sse.p99)} | ${f(p.sse.max)} | ${p.sse.n} | ${(p.delivered * 100).toFixed(1)} % | ${p.ended} | ${f(p.gatewayCpu)} | ${f(p.gatewayUsPerDelivery)} | ${f(p.clientsCpu)} | ${p.load.toFixed(1)} | ${p.lag} | ${mb(p.backlog?.gatewayUnsent)} | ${mb(p.backlog?.clientsUnread)} |`,
    );
    console.log(`| ${p.rate} | baseline: ordered consumer | ${f(p.nats.p50)} | ${f(p.nats.p99)} | ${f(p.nats.max)} | ${p.nats.n} | ${p.published > 0 ? ((p.nats.n / p.published) * 100).toFixed(1) : "-"} % | - | - | - | - | - | - | - | - |`);
  }
  console.log("");
  console.log(
    "where a backlog was at the end of each window: events still in JetStream for the gateway's consumers (the gateway behind), bytes in the kernel's socket queues (ss) the gateway handed over and no client took, and bytes the clients have not read (the clients' processes behind)",
  );
  console.log("");
  for (const p of phases) {
    const ok = p.sse.p99 <= TARGET_P99_MS && p.delivered >= 0.999 && p.ended === 0;
    console.log(
      `${p.rate} events/s to ${CLIENTS} clients: p99 ${f(p.sse.p99)} ms (baseline ${f(p.nats.p99)} ms: the gateway adds ${f(p.sse.p99 - p.nats.p99)} ms at p99, ${f(p.sse.p50 - p.nats.p50)} ms at p50), ` +
        `${(p.delivered * 100).toFixed(1)} % delivered, ${p.ended} dropped ` +
        `${ok ? "PASS" : "FAIL"} (target p99 ≤ ${TARGET_P99_MS} ms, everything delivered)${p.failed > 0 ? `; ${p.failed} publishes failed` : ""}`,
    );
  }

  console.log("");
  console.log(`gateway memory, ${WAVES} waves of ${CLIENTS} clients (each gets ${WAVE_RATE} events/s for ${WAVE_HOLD_S} s, then leaves); before the first wave: RSS ${mb(rss0)} MB, heap ${mb(heap0)} MB`);
  console.log("| wave | RSS MB, clients on | heap MB, clients on | RSS MB, after leaving | heap MB, after leaving | gateway consumers left |");
  console.log("|---|---|---|---|---|---|");
  for (const w of waves) console.log(`| ${w.wave} | ${mb(w.rssOn)} | ${mb(w.heapOn)} | ${mb(w.rssOff)} | ${mb(w.heapOff)} | ${w.leftConsumers} |`);
  const ref = waves[1] ?? waves[0];
  const last = waves[waves.length - 1];
  if (ref?.rssOff !== undefined && last?.rssOff !== undefined) {
    const growth = last.rssOff / ref.rssOff - 1;
    // Growth is what a leak looks like; memory the gateway gave back (a drop) is fine.
    const flat = growth <= FLAT_TOLERANCE && last.leftConsumers === 0;
    const heapGrowth = ref.heapOff !== undefined && last.heapOff !== undefined ? last.heapOff / ref.heapOff - 1 : NaN;
    console.log(
      `memory: RSS after wave ${last.wave} is ${(growth * 100).toFixed(1)} % from wave ${ref.wave}'s (heap ${(heapGrowth * 100).toFixed(1)} %) ${flat ? "PASS" : "FAIL"} ` +
        `(flat: the last wave's RSS after leaving at most ${FLAT_TOLERANCE * 100} % above wave ${ref.wave}'s, wave 1 being the warm-up, and no consumer left behind)`,
    );
  }
  console.log(`gateway on ${HOST}; clients, gateway, nats-server and publisher share 2 cores with other work; figures are noisy.`);
  if (profDir !== undefined) await printGatewayProfile(gw, profDir);
}

await runBench(main);
