// Control request/reply latency: camfleet's control path against a plain NATS
// ping-pong (the floor), the v3 client's nc.request() and Moleculer over NATS,
// all on one nats-server in one run. Rows:
//   1. floor: v3 publish/subscribe ping-pong between two connections
//   2. v3 nc.request() against a trivial responder
//   3. Moleculer 0.14 over its NATS transporter, two brokers
//   4. camfleet: ControlClient.cameraStatus against a real `camfleet node` child
//      running a sim camera (n/a, with the reason, when the node cannot serve it)
//   5. ControlClient against a trivial responder: the client's own cost
//
// Every row has the same topology: the caller runs in this process, the
// responder in one other process. The responders of rows 1, 2, 3 and 5 all run
// in one child (bench/control-rpc-responders.ts); row 4's is the node. On a
// machine with few CPUs the hop to another process costs about as much as
// everything else, so a responder inside this process would flatter its row.
//
//   npm run bench:control                 # N = 20000 round trips per row
//   npm run bench:control -- --n 5000     # or BENCH_N=5000
//
// Each row makes sequential round trips, one in flight. Rows run interleaved
// in blocks, so drift in the machine's state (CPU frequency, other load)
// spreads over all of them instead of favouring whichever ran first.
//
// Besides latency, each row shows the CPU time per round trip of the
// responding process (utime+stime from /proc/<pid>/stat, summed over the
// row's measured blocks) and of this, the calling, process (process.cpuUsage()).
//
// Targets (the issue): camfleet p50 no slower than Moleculer's p50; camfleet
// p99 at most 1.5x the floor's p99.
//
// This and the responders file are the only places the v2 `nats` package
// appears in camfleet: Moleculer's NATS transporter needs it (it is a
// devDependency for this benchmark alone). Everything of camfleet's own uses
// the v3 client.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { ServiceBroker } from "moleculer";
import { ControlClient } from "../runtime/client/control-client.ts";
import { NatsServerProcess } from "../runtime/infra/nats-server.ts";
import { CamfleetError } from "../subjects/index.ts";
import {
  ECHO,
  MOLECULER_SERVICE,
  moleculerOptions,
  PING,
  PONG,
  READY_LINE,
  STUB_CAMERA,
} from "./control-rpc-responders.ts";

const N = readCount();
const WARMUP = 2000;
const BLOCK = 250;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "camfleet");
const RESPONDERS = fileURLToPath(new URL("./control-rpc-responders.ts", import.meta.url));
/** How long the camfleet node may take to serve control and run the bench camera. */
const NODE_READY_MS = 30_000;
/** How long the responders child may take to start (tsx, two NATS clients, Moleculer) and print its ready line. */
const RESPONDERS_READY_MS = 30_000;
const BENCH_CAMERA = "bench-cam";
/** Clock ticks per second of /proc/<pid>/stat's utime and stime. */
const CLK_TCK = clockTicks();

/** The process that answers a row's requests, for its CPU time. */
interface Responder {
  pid: number;
  label: string;
}

interface Row {
  name: string;
  /** One round trip. */
  trip?: () => Promise<unknown>;
  /** Why the row has no figures. */
  na?: string;
  responder?: Responder;
  samples: Float64Array;
  count: number;
  /** Responder CPU over the measured blocks, clock ticks; undefined once /proc could not be read. */
  responderTicks: number | undefined;
  /** This process's CPU over the measured blocks, µs. */
  callerCpuUs: number;
}

function row(name: string, responder: Responder, trip: () => Promise<unknown>): Row {
  return { name, trip, responder, samples: new Float64Array(N), count: 0, responderTicks: 0, callerCpuUs: 0 };
}

function naRow(name: string, reason: string): Row {
  return { name, na: reason, samples: new Float64Array(0), count: 0, responderTicks: undefined, callerCpuUs: 0 };
}

/** A started child: its pid, or why it is not serving. */
type Started = { pid: number } | { failed: string };

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "camfleet-bench-"));
  const server = new NatsServerProcess({ name: "bench", storeDir: join(root, "store") });
  const cleanup: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    // Reverse order: clients and the children go before the server they talk to.
    for (const fn of cleanup.reverse()) await fn().catch((err: unknown) => console.error("cleanup:", err));
    cleanup.length = 0;
    await server.stop();
    await rm(root, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping`);
    void stop().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    await server.start();
    const url = server.url;
    const client = await connect({ servers: url, name: "bench-client" });
    cleanup.push(() => client.close());

    // The node and the responders child start side by side; both are needed before any row runs.
    const [responders, camfleet] = await Promise.all([startResponders(url, cleanup), camfleetRow(client, url, cleanup)]);
    const rows: Row[] = [
      floorRow(client, responders),
      requestRow(client, responders),
      await moleculerRow(url, responders, cleanup),
      camfleet,
      stubRow(client, responders),
    ];
    await client.flush();

    // Warm-up: JIT, connection buffers, Moleculer's discovery.
    for (const r of rows) await measure(r, WARMUP, false);
    for (let done = 0; done < N; done += BLOCK) {
      for (const r of rows) await measure(r, Math.min(BLOCK, N - done), true);
    }
    report(rows, client, responders, camfleet);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await stop();
  }
}

/**
 * The one child that serves rows 1, 2, 3 and 5 (bench/control-rpc-responders.ts).
 * Resolves once it printed its ready line; its stop (and reaping) is in `cleanup`
 * from the moment it is spawned.
 */
async function startResponders(url: string, cleanup: Array<() => Promise<unknown>>): Promise<Started> {
  // The environment is inherited (PATH, and the test suite's leak-check mark if any).
  // stdin stays open: its end tells the child that this process is gone.
  const child = spawn(process.execPath, ["--import", "tsx", RESPONDERS, url], {
    cwd: ROOT,
    env: process.env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  cleanup.push(() => stopChild(child));
  const stderr: string[] = [];
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    stderr.splice(0, Math.max(0, stderr.length - 20));
  });
  let timer: NodeJS.Timeout | undefined;
  const failed = await new Promise<string | undefined>((resolve) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      if (line.trim() === READY_LINE) resolve(undefined);
    });
    child.once("exit", (code, signal) =>
      resolve(`responders exited (${signal ?? `code ${code}`}): ${stderr.at(-1) ?? "no output"}`),
    );
    child.once("error", (err) => resolve(`responders could not be spawned: ${err.message}`));
    timer = setTimeout(() => resolve(`responders not ready within ${RESPONDERS_READY_MS} ms: ${stderr.at(-1) ?? "no output"}`), RESPONDERS_READY_MS);
  });
  clearTimeout(timer);
  if (failed !== undefined || child.pid === undefined) return { failed: failed ?? "responders have no pid" };
  return { pid: child.pid };
}

function respondersOf(started: Started): Responder | string {
  return "failed" in started ? started.failed : { pid: started.pid, label: "responders" };
}

/** 1. The floor: publish a ping, the responders child publishes the pong, wait for it. */
function floorRow(client: NatsConnection, responders: Started): Row {
  const name = "floor: NATS pub/sub ping-pong";
  const responder = respondersOf(responders);
  if (typeof responder === "string") return naRow(name, responder);
  let pong: (() => void) | undefined;
  client.subscribe(PONG, { callback: () => pong?.() });
  return row(name, responder, () => new Promise<void>((resolve) => {
    pong = resolve;
    client.publish(PING, "{}");
  }));
}

/** 2. The v3 client's own request(), against the child's echo. */
function requestRow(client: NatsConnection, responders: Started): Row {
  const name = "v3 nc.request()";
  const responder = respondersOf(responders);
  if (typeof responder === "string") return naRow(name, responder);
  return row(name, responder, () => client.request(ECHO, "{}", { timeout: 5000 }));
}

/** 3. Moleculer 0.14 over its NATS transporter: the child's broker serves the action, one here calls it. */
async function moleculerRow(url: string, responders: Started, cleanup: Array<() => Promise<unknown>>): Promise<Row> {
  const name = "Moleculer 0.14 over NATS";
  const responder = respondersOf(responders);
  if (typeof responder === "string") return naRow(name, responder);
  try {
    const calling = new ServiceBroker({ ...moleculerOptions(url), nodeID: "bench-caller" });
    cleanup.push(() => calling.stop());
    await calling.start();
    await calling.waitForServices(MOLECULER_SERVICE, 10_000);
    const action = `${MOLECULER_SERVICE}.status`;
    return row(name, responder, () => calling.call(action, { id: STUB_CAMERA }));
  } catch (err) {
    return naRow(name, describe(err));
  }
}

/** 4. ControlClient.cameraStatus against a real `camfleet node` process running a sim camera. */
async function camfleetRow(nc: NatsConnection, url: string, cleanup: Array<() => Promise<unknown>>): Promise<Row> {
  const name = "camfleet: cameraStatus via node";
  // The environment is inherited (PATH, and the test suite's leak-check mark if any).
  const env = { ...process.env, NATS_URL: url, NODE_ID: "bench-n1", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", LOG_LEVEL: "warn" };
  const child = spawn(BIN, ["node"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  const keep = (chunk: Buffer) => {
    output.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    output.splice(0, Math.max(0, output.length - 20));
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<string>((resolve) => {
    child.once("exit", (code, signal) => resolve(`node exited (${signal ?? `code ${code}`}): ${output.at(-1) ?? "no output"}`));
    child.once("error", (err) => resolve(`node could not be spawned: ${err.message}`));
  });
  cleanup.push(() => stopChild(child));

  const ctl = new ControlClient(nc, { timeoutMs: 2000 });
  const deadline = Date.now() + NODE_READY_MS;
  let last = "no attempt yet";
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<string | undefined> => {
    for (;;) {
      const outcome = await Promise.race([
        fn().then(() => ({ ok: true as const }), (err: unknown) => ({ ok: false as const, err })),
        exited.then((why) => ({ exited: why })),
      ]);
      if ("exited" in outcome) return outcome.exited;
      if (outcome.ok) return undefined;
      last = `${what}: ${describe(outcome.err)}`;
      // Only "not there yet" is worth waiting for; anything else will not change.
      const retry = outcome.err instanceof CamfleetError && (outcome.err.code === "UNAVAILABLE" || outcome.err.code === "NOT_FOUND");
      if (!retry) return last;
      if (Date.now() > deadline) return `not ready within ${NODE_READY_MS} ms (${last})`;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const failed =
    (await attempt("putCamera", () => ctl.putCamera({ id: BENCH_CAMERA, url: "rtsp://127.0.0.1/sim" }))) ??
    (await attempt("cameraStatus", () => ctl.cameraStatus(BENCH_CAMERA)));
  if (failed !== undefined) return naRow(name, failed);
  if (child.pid === undefined) return naRow(name, "node has no pid");
  return row(name, { pid: child.pid, label: "node" }, () => ctl.cameraStatus(BENCH_CAMERA));
}

/** 5. ControlClient against the child's trivial responder: the client's own cost, no node involved. */
function stubRow(client: NatsConnection, responders: Started): Row {
  const name = "camfleet client vs. trivial responder";
  const responder = respondersOf(responders);
  if (typeof responder === "string") return naRow(name, responder);
  const ctl = new ControlClient(client, { timeoutMs: 5000 });
  return row(name, responder, () => ctl.cameraStatus(STUB_CAMERA));
}

/**
 * Runs `count` sequential round trips; a failure turns the row into n/a rather
 * than ending the run. When recording, it also adds up the CPU time the
 * responding process and this one spend over the block.
 */
async function measure(r: Row, count: number, record: boolean): Promise<void> {
  const trip = r.trip;
  if (trip === undefined) return;
  const pid = record ? r.responder?.pid : undefined;
  const ticks0 = pid === undefined ? undefined : procTicks(pid);
  const cpu0 = record ? process.cpuUsage() : undefined;
  try {
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint();
      await trip();
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (record) r.samples[r.count++] = us;
    }
  } catch (err) {
    r.trip = undefined;
    r.na = `failed after ${r.count} round trips: ${describe(err)}`;
    return;
  }
  if (cpu0 !== undefined) {
    const cpu = process.cpuUsage(cpu0);
    r.callerCpuUs += cpu.user + cpu.system;
  }
  if (pid !== undefined) {
    const ticks1 = procTicks(pid);
    r.responderTicks = ticks0 === undefined || ticks1 === undefined || r.responderTicks === undefined ? undefined : r.responderTicks + ticks1 - ticks0;
  }
}

/** utime + stime of a process (all its threads), in clock ticks; undefined when /proc has no such process. */
function procTicks(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Fields after "(comm)" start at field 3 (state); utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : undefined;
}

function clockTicks(): number {
  try {
    const hz = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    if (Number.isInteger(hz) && hz > 0) return hz;
  } catch {
    // No getconf: Linux reports /proc times in USER_HZ, 100 on every common architecture.
  }
  return 100;
}

interface Stats {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function stats(r: Row): Stats | undefined {
  if (r.na !== undefined || r.count === 0) return undefined;
  const xs = r.samples.slice(0, r.count).sort();
  const at = (p: number) => xs[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)]!;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: xs[xs.length - 1]! };
}

function report(rows: Row[], nc: NatsConnection, responders: Started, camfleet: Row): void {
  const s = rows.map(stats);
  const [floor, , moleculer, camfleetStats, stub] = s;
  const fmt = (v: number) => v.toFixed(0);
  const ratio = (v: number, base: number | undefined) => (base === undefined ? "-" : `${(v / base).toFixed(2)}x`);
  const perTrip = (total: number | undefined, r: Row) => (total === undefined || r.count === 0 ? "-" : (total / r.count).toFixed(1));

  console.log(`\ncontrol request/reply latency, µs — N=${N} round trips per row after ${WARMUP} warm-up, one in flight`);
  console.log(`node ${process.version}, nats-server ${nc.info?.version ?? "?"}, ${cpus().length} CPUs, ${cpus()[0]?.model ?? ""}`);
  console.log("every row: the caller runs in this process (pid " + process.pid + "), the responder in a separate process —");
  const respondersWhere = "failed" in responders ? `not running (${responders.failed})` : `pid ${responders.pid}`;
  console.log(`  rows 1, 2, 3, 5: one responders child, bench/control-rpc-responders.ts, ${respondersWhere}`);
  console.log(`  row 4: a \`camfleet node\` process with a sim camera, ${camfleet.responder ? `pid ${camfleet.responder.pid}` : "not running"}`);
  console.log(
    `server CPU/req: the responding process's utime+stime (/proc/<pid>/stat, 1/${CLK_TCK} s ticks) over the row's measured blocks / round trips, µs;`,
  );
  console.log("  it includes whatever else that process does meanwhile (the node's leases, heartbeats and sim camera). caller CPU/req: this process, likewise.\n");
  const header = ["", "p50", "p90", "p99", "max", "p50/floor", "p99/floor", "server CPU/req", "caller CPU/req"];
  const lines: string[][] = rows.map((r, i) => {
    const st = s[i];
    const name = `${i + 1}. ${r.name}`;
    if (st === undefined) return [name, `n/a (${r.na ?? "no samples"})`];
    const serverUs = r.responderTicks === undefined ? undefined : (r.responderTicks * 1e6) / CLK_TCK;
    return [
      name,
      fmt(st.p50),
      fmt(st.p90),
      fmt(st.p99),
      fmt(st.max),
      ratio(st.p50, floor?.p50),
      ratio(st.p99, floor?.p99),
      perTrip(serverUs, r),
      perTrip(r.callerCpuUs, r),
    ];
  });
  const width = (c: number) => Math.max(...[header, ...lines].filter((l) => l.length > 2).map((l) => (l[c] ?? "").length));
  const pad = (l: string[]) =>
    l.length === 2 ? `${l[0]!.padEnd(width(0))}  ${l[1]}` : l.map((cell, c) => (c === 0 ? cell.padEnd(width(0)) : cell.padStart(width(c)))).join("  ");
  console.log(pad(header));
  for (const l of lines) console.log(pad(l));

  console.log("\ntargets (issue): camfleet p50 <= Moleculer p50; camfleet p99 <= 1.5 x floor p99");
  const check = (label: string, subject: Stats | undefined) => {
    const line = (ok: boolean | undefined, text: string) => console.log(`  ${ok === undefined ? "n/a " : ok ? "PASS" : "FAIL"}  ${label}: ${text}`);
    const us = (v: number | undefined) => (v === undefined ? "n/a" : `${v.toFixed(1)} µs`);
    line(subject && moleculer && subject.p50 <= moleculer.p50, `p50 ${us(subject?.p50)} vs Moleculer p50 ${us(moleculer?.p50)}`);
    line(subject && floor && subject.p99 <= 1.5 * floor.p99, `p99 ${us(subject?.p99)} vs 1.5 x floor p99 = ${us(floor && 1.5 * floor.p99)}`);
  };
  check("camfleet via node (row 4)", camfleetStats);
  check("client alone (row 5, for reference)", stub);
}

/** Stops a child (SIGTERM, SIGKILL after 5 s) and waits for its exit, so it is reaped. */
async function stopChild(child: ChildProcess): Promise<void> {
  // Never spawned, or already gone (and reaped: exitCode/signalCode are set on reaping).
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

function readCount(): number {
  const args = process.argv.slice(2);
  const i = args.findIndex((a) => a === "--n" || a.startsWith("--n="));
  const raw = i < 0 ? process.env.BENCH_N : args[i]!.startsWith("--n=") ? args[i]!.slice(4) : args[i + 1];
  if (raw === undefined) return 20_000;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--n / BENCH_N must be a positive integer number of round trips, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

function describe(err: unknown): string {
  if (err instanceof CamfleetError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

await main();
