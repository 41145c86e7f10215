// Soak (issue #14 item 7): the fault schedule of the fast suite, repeated for
// SOAK_MINUTES (default 60), sampling every SOAK_SAMPLE_S (default 10) the
// nodes' open fds and RSS, this harness's own, the FFmpeg count and the
// JetStream consumer count, and judging each by its slope (least squares,
// test/helpers/faults/judge.ts) against a threshold per resource.
//
// The judge proves itself first: a control phase (SOAK_CONTROL_MINUTES,
// default a sixth of the soak, 2..10 min) runs the same schedule while this
// harness leaks on purpose (2 fds and 1 durable consumer per sample). The
// judge must call both a leak, or the soak stops there (exit 2): a judge that
// cannot see a deliberate leak clears nothing. Then the leak is cleaned up
// and the real phase runs. SOAK_INJECT_LEAK=1 keeps the leak in the real
// phase as well (to watch the soak fail, exit 1).
//
//   npm run soak                    # an hour
//   SOAK_MINUTES=3 npm run soak     # a quick check (control 2 min + 3 min)
//   SOAK_FAULTS=nats SOAK_CONTROL_MINUTES=0 SOAK_MINUTES=10 npm run soak
//                                   # only the faults whose name has "nats", no control
//
// SOAK_FAULTS (comma-separated parts of fault names) runs a part of the
// schedule; SOAK_CONTROL_MINUTES=0 skips the control phase, and then the leak
// verdicts are unproven: the exit is 2 even when they say "ok".
//
// Exit 0 only when nothing leaks and every fault kept every invariant.

import { closeSync, openSync, readdirSync, readFileSync } from "node:fs";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import { STREAMS } from "../subjects/index.ts";
import { stopEverything } from "../test/helpers/fleet.ts";
import { ffmpegProcesses } from "../test/helpers/faults/invariants.ts";
import { judge, type Sample, type Verdict } from "../test/helpers/faults/judge.ts";
import { startRig, type Rig } from "../test/helpers/faults/rig.ts";
import { newRunState, printReport, runFault, SCHEDULE, startFault, type FaultResult } from "../test/helpers/faults/schedule.ts";

function envNumber(name: string, fallback: number, opts: { zero?: boolean } = {}): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && opts.zero !== true)) throw new Error(`${name} must be a positive number${opts.zero === true ? " or 0" : ""}, got ${JSON.stringify(raw)}`);
  return n;
}

const MINUTES = envNumber("SOAK_MINUTES", 60);
const CONTROL_MINUTES = envNumber("SOAK_CONTROL_MINUTES", Math.min(10, Math.max(2, MINUTES / 6)), { zero: true });
const FAULT_FILTER = (process.env.SOAK_FAULTS ?? "")
  .split(",")
  .map((f) => f.trim())
  .filter((f) => f !== "");
const FAULTS = FAULT_FILTER.length === 0 ? SCHEDULE : SCHEDULE.filter((f) => FAULT_FILTER.some((part) => f.name.includes(part)));
if (FAULTS.length === 0) throw new Error(`SOAK_FAULTS=${JSON.stringify(process.env.SOAK_FAULTS)} names no fault of the schedule (${SCHEDULE.map((f) => f.name).join(", ")})`);
const SAMPLE_MS = envNumber("SOAK_SAMPLE_S", 10) * 1000;
const INJECT_LEAK = process.env.SOAK_INJECT_LEAK === "1";

/** Per minute: above this (and clearly above the noise) a resource leaks. An hour at the threshold is the growth in parentheses. */
const THRESHOLDS: Record<string, number> = {
  "node fds (mean per node)": 0.5, // 30 fds an hour
  "node RSS MB (mean per node)": 1, // 60 MB an hour
  "harness fds": 0.5,
  "harness RSS MB": 2,
  "ffmpeg processes": 0.05, // 3 an hour: more than one camera's worth
  "JetStream consumers": 0.2, // 12 an hour
};
/** What the control phase's deliberate leak must make the judge flag. */
const LEAKED = ["harness fds", "JetStream consumers"];

function fdCount(pid: number | "self"): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

function rssMb(pid: number | "self"): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

const meanOf = (xs: number[]) => {
  const ok = xs.filter(Number.isFinite);
  return ok.length === 0 ? NaN : ok.reduce((a, b) => a + b, 0) / ok.length;
};

/**
 * Consumers on every stream (KV buckets are streams too); NaN while JetStream
 * does not answer (a fault is on). The checks delete their own readers once
 * read (test/helpers/streams.ts), so at most one or two of theirs are counted.
 * (Listing each stream's consumers to leave those out failed under faults.)
 */
async function consumerCount(rig: Rig, byStream?: Map<string, number>): Promise<number> {
  try {
    const jsm = await jetstreamManager(rig.nc, { timeout: 2000 });
    let total = 0;
    const counts = new Map<string, number>();
    for await (const s of jsm.streams.list()) {
      total += s.state.consumer_count;
      counts.set(s.config.name, s.state.consumer_count);
    }
    if (byStream !== undefined) for (const [k, v] of counts) byStream.set(k, v);
    return total;
  } catch {
    return NaN;
  }
}

/**
 * Where the consumers are, for a leak verdict to point at: per stream, the
 * count at the first and the last sample, and for each stream that grew, how
 * many of its consumers have a client bound (push_bound) and on which filter.
 */
async function describeConsumers(rig: Rig, first: ReadonlyMap<string, number>, last: ReadonlyMap<string, number>): Promise<string> {
  const lines: string[] = [];
  const jsm = await jetstreamManager(rig.nc, { timeout: 5000 });
  for (const [stream, n] of last) {
    const was = first.get(stream) ?? 0;
    lines.push(`  ${stream}: ${was} → ${n}`);
    if (n <= was) continue;
    const kinds = new Map<string, number>();
    try {
      for await (const c of jsm.consumers.list(stream)) {
        const key = `${c.config.durable_name !== undefined ? "durable" : "ephemeral"} ${c.push_bound === true ? "bound" : "unbound"} ${c.config.filter_subject ?? ((c.config.filter_subjects ?? []).join("|") || "*")}`;
        kinds.set(key, (kinds.get(key) ?? 0) + 1);
      }
    } catch (err) {
      lines.push(`    (listing failed: ${(err as Error).message})`);
    }
    for (const [k, v] of [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 6)) lines.push(`    ${v} × ${k}`);
  }
  return lines.join("\n");
}

interface Leak {
  fds: number[];
  consumers: string[];
}

/** The deliberate leak: a few fds and a durable consumer, kept until cleanUp. */
async function leakOnce(rig: Rig, leak: Leak): Promise<void> {
  leak.fds.push(openSync("/dev/null", "r"), openSync("/dev/null", "r"));
  const name = `soak-leak-${leak.consumers.length + 1}`;
  try {
    const jsm = await jetstreamManager(rig.nc, { timeout: 2000 });
    // One replica in memory: light on the cluster (an R3 consumer is a Raft group of its own), counted all the same.
    await jsm.consumers.add(STREAMS.status, { durable_name: name, ack_policy: AckPolicy.None, num_replicas: 1, mem_storage: true });
    leak.consumers.push(name);
  } catch {
    // JetStream busy with a fault: leak again next sample
  }
}

async function cleanUp(rig: Rig, leak: Leak): Promise<void> {
  for (const fd of leak.fds.splice(0)) closeSync(fd);
  const jsm = await jetstreamManager(rig.nc);
  for (const name of leak.consumers.splice(0)) await jsm.consumers.delete(STREAMS.status, name).catch(() => undefined);
}

interface Phase {
  name: string;
  verdicts: Verdict[];
  results: FaultResult[];
  cycles: number;
  /** Consumers per stream at the first and the last sample that could count them. */
  consumers: { first: Map<string, number>; last: Map<string, number> };
}

/** Runs the schedule over and over for `minutes`, sampling meanwhile; the phase ends after the fault running at the deadline. */
async function runPhase(rig: Rig, name: string, minutes: number, leaking: boolean): Promise<Phase> {
  const series = new Map<string, Sample[]>(Object.keys(THRESHOLDS).map((k) => [k, []]));
  const leak: Leak = { fds: [], consumers: [] };
  const started = Date.now();
  const deadline = started + minutes * 60_000;
  let sampling = Promise.resolve();
  const consumers = { first: new Map<string, number>(), last: new Map<string, number>() };
  const sample = async () => {
    const byStream = new Map<string, number>();
    if (leaking) await leakOnce(rig, leak);
    const t = (Date.now() - started) / 60_000;
    const nodes = rig.live();
    const values: Record<string, number> = {
      "node fds (mean per node)": meanOf(nodes.map((n) => fdCount(n.pid))),
      "node RSS MB (mean per node)": meanOf(nodes.map((n) => rssMb(n.pid))),
      "harness fds": fdCount("self"),
      "harness RSS MB": rssMb("self"),
      "ffmpeg processes": ffmpegProcesses(rig.rtsp.port, rig.cameras).length,
      "JetStream consumers": await consumerCount(rig, byStream),
    };
    if (byStream.size > 0) {
      if (consumers.first.size === 0) for (const [k, v] of byStream) consumers.first.set(k, v);
      consumers.last = byStream;
    }
    for (const [k, v] of Object.entries(values)) series.get(k)!.push({ t, value: v });
  };
  await sample();
  const timer = setInterval(() => {
    sampling = sampling.then(sample);
  }, SAMPLE_MS);
  const state = newRunState();
  let cycles = 0;
  try {
    while (Date.now() < deadline) {
      for (const fault of FAULTS) {
        if (Date.now() >= deadline) break;
        await runFault(rig, state, fault, (line) => console.log(`[${name} cycle ${cycles + 1}] ${line}`));
      }
      cycles++;
    }
  } finally {
    clearInterval(timer);
    await sampling;
    if (leak.fds.length + leak.consumers.length > 0) await cleanUp(rig, leak);
  }
  const verdicts = [...series].map(([k, samples]) => judge(k, samples, THRESHOLDS[k]!));
  return { name, verdicts, results: state.results, cycles, consumers };
}

function printVerdicts(phase: Phase): void {
  console.log(`\n${phase.name}: ${phase.cycles} cycle(s) of the schedule, ${phase.results.length} faults`);
  console.table(
    phase.verdicts.map((v) => ({
      resource: v.resource,
      samples: v.samples,
      first: Number(v.first.toFixed(1)),
      last: Number(v.last.toFixed(1)),
      "slope /min": Number(v.slope.toFixed(3)),
      "± stderr": Number(v.stderr.toFixed(3)),
      "threshold /min": v.threshold,
      verdict: v.leaks ? "LEAK" : "ok",
    })),
  );
}

const cleanups: Array<() => Promise<void>> = [];
let exitCode = 0;
let rig: Rig | undefined;
const stopAll = async () => {
  if (rig !== undefined) await stopEverything(rig.nodes, [rig.cluster], rig.serverPids()).catch(() => undefined);
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
};
process.once("SIGINT", () => void stopAll().finally(() => process.exit(130)));
process.once("SIGTERM", () => void stopAll().finally(() => process.exit(143)));
try {
  console.log(
    `soak: ${CONTROL_MINUTES > 0 ? `control ${CONTROL_MINUTES} min with a deliberate leak, then ` : "no control phase (leak verdicts unproven), "}${MINUTES} min${INJECT_LEAK ? " (leak kept: SOAK_INJECT_LEAK=1)" : ""}; a sample every ${SAMPLE_MS / 1000} s; faults: ${FAULTS.map((f) => f.name).join(", ")}`,
  );
  rig = await startRig({ onCleanup: (fn) => void cleanups.push(fn) });

  // Every camera up before anything is judged: start-up is neither a fault nor a leak.
  const start = await runFault(rig, newRunState(), startFault(), (line) => console.log(`[start] ${line}`));
  if (start.invariants.recovery.length > 0) throw new Error(`the fleet never settled at the start: ${start.invariants.recovery.join("; ")}`);
  const control = CONTROL_MINUTES > 0 ? await runPhase(rig, "control (deliberate leak)", CONTROL_MINUTES, true) : undefined;
  if (control !== undefined) printVerdicts(control);
  const missed = control === undefined ? [] : LEAKED.filter((r) => !control.verdicts.find((v) => v.resource === r)?.leaks);
  if (missed.length > 0) {
    console.log(`\nsoak: the judge did not see the deliberate leak of ${missed.join(", ")}: its verdict on the real run would mean nothing. FAIL`);
    exitCode = 2;
  } else {
    console.log(control !== undefined ? `\nsoak: the judge caught the deliberate leak (${LEAKED.join(", ")}); now the real run` : "\nsoak: no control phase; now the real run");
    const real = await runPhase(rig, "soak", MINUTES, INJECT_LEAK);
    printReport(real.results);
    printVerdicts(real);
    console.log(`JetStream consumers by stream, first and last sample:\n${await describeConsumers(rig, real.consumers.first, real.consumers.last).catch((err: Error) => `  (${err.message})`)}`);
    const leaks = real.verdicts.filter((v) => v.leaks).map((v) => v.resource);
    const broken = real.results.filter((r) => !r.held).map((r) => `${r.index} ${r.name}`);
    console.log(`\nsoak: ${leaks.length === 0 ? "no leak" : `LEAK: ${leaks.join(", ")}`}; ${broken.length === 0 ? "every invariant held" : `invariants BROKEN after fault(s) ${broken.join(", ")}`}`);
    if (leaks.length > 0 || broken.length > 0) exitCode = 1;
    else if (control === undefined) {
      console.log("soak: the leak verdicts are unproven without the control phase (exit 2)");
      exitCode = 2;
    }
  }
} catch (err) {
  console.error(err);
  exitCode = 1;
} finally {
  await stopAll();
}
process.exit(exitCode);
