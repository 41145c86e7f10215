// The built-in relay's cost: latency it adds (RTP in → RTP out) at p50/p99,
// and CPU per viewer, with up to 50+ viewers of one 2 Mbit/s camera.
//
// Path measured: this process sends a synthetic 2 Mbit/s H.264-shaped RTP
// stream (25 fps, 10 packets a frame, an SPS + IDR every 2 s) through our
// WHIP publisher (media/whip-client.ts) to a `camfleet gateway` process;
// N werift WHEP viewers run in another process (test/fixtures/whep-viewers.ts).
// Each packet carries the sender's CLOCK_MONOTONIC time, so a viewer's
// receive time minus it is the one-way latency through publisher, relay and
// viewer.
// Baseline, same run, same packets: plain UDP, this process → a forwarder
// process that sends each packet to N sockets → a sink process. The relay's
// added latency is the relay path's figure minus the baseline's.
// CPU: the gateway process's (utime + stime) over the window, with N viewers
// minus with the publisher alone, divided by N.
//
// Targets (issue 5): p99 ≤ 20 ms, ≥ 50 viewers of a 2 Mbit/s camera.
// BENCH_VIEWERS (default "10,50"), BENCH_WINDOW_S (10), BENCH_PROFILE
// (auto: profile the gateway when a target is missed; 1: always; 0: never),
// BENCH_NODE_FLAGS (Node flags for the gateway after bin/camfleet's own).
// On this 2-core machine the viewers' process competes with the relay for
// CPU, and another engineer's work may run at the same time: figures are noisy.

import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { startWhip } from "../media/index.ts";
import { superviseSpawn, type SupervisedChild } from "../runtime/infra/child-process.ts";
import { ensureJetStream } from "../runtime/index.ts";
import { NatsServerProcess } from "../runtime/infra/nats-server.ts";
import { BUCKETS, CameraSpecSchema, kvKeys } from "../subjects/index.ts";
import { reservePort } from "../test/helpers/ports.ts";
import { quantile, waitUntil } from "./fleet-bench.ts";
import { busiestProfile, CLK_TCK, cpuTicks, topSelf } from "./proc-profile.ts";

const COUNTS = (process.env.BENCH_VIEWERS ?? "10,50").split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 10);
const PROFILE = process.env.BENCH_PROFILE ?? "auto";
const SETTLE_S = 3;
const FPS = 25;
const BITRATE_KBPS = 2000;
const GOP = 50;
const PAYLOAD = 1100;
const TARGET_P99_MS = 20;
const TARGET_VIEWERS = 50;
const CAMFLEET_BIN = fileURLToPath(new URL("../bin/camfleet", import.meta.url));
const VIEWERS = fileURLToPath(new URL("../test/fixtures/whep-viewers.ts", import.meta.url));
const BASELINE = fileURLToPath(new URL("./udp-baseline.ts", import.meta.url));
const HOST = "127.0.0.1";
const VIEWERS_PER_PROCESS = 10;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: Array<() => Promise<unknown>> = [];

/** CPU ticks of a process we started and still wait for; 0 once it is gone. */
const ticks = (pid: number): number => cpuTicks(pid) ?? 0;

/** A synthetic camera: 2 Mbit/s of H.264-shaped RTP at 25 fps; each packet stamped with hrtime at bytes 14..21. */
function syntheticCamera(send: (packet: Buffer) => void): { stop(): void; sent(): number } {
  let frame = 0;
  let seq = 0;
  let sent = 0;
  const ssrc = 0x1234abcd;
  const frameBytes = Math.round((BITRATE_KBPS * 1000) / 8 / FPS);
  const packet = (payload: Buffer, marker: boolean) => {
    const b = Buffer.alloc(12 + payload.length);
    b[0] = 0x80;
    b[1] = (marker ? 0x80 : 0) | 96;
    b.writeUInt16BE(seq++ & 0xffff, 2);
    b.writeUInt32BE((frame * (90_000 / FPS)) >>> 0, 4);
    b.writeUInt32BE(ssrc, 8);
    payload.copy(b, 12);
    b.writeBigUInt64BE(process.hrtime.bigint(), 14);
    sent++;
    send(b);
  };
  const tick = () => {
    const key = frame % GOP === 0;
    const type = key ? 5 : 1;
    if (key) {
      const sps = Buffer.alloc(24);
      sps[0] = 0x67; // SPS
      packet(sps, false);
    }
    const n = Math.ceil(frameBytes / PAYLOAD);
    for (let i = 0; i < n; i++) {
      const p = Buffer.alloc(i === n - 1 ? frameBytes - PAYLOAD * (n - 1) : PAYLOAD);
      p[0] = (key ? 0x60 : 0x40) | 28; // FU-A indicator
      p[1] = (i === 0 ? 0x80 : 0) | (i === n - 1 ? 0x40 : 0) | type;
      packet(p, i === n - 1);
    }
    frame++;
  };
  const timer = setInterval(tick, 1000 / FPS);
  return { stop: () => clearInterval(timer), sent: () => sent };
}

/** Reads JSON lines of a child's stdout. */
function lines(child: SupervisedChild, on: (line: Record<string, unknown>) => void): void {
  let buf = "";
  child.child.stdout!.setEncoding("utf8").on("data", (c: string) => {
    buf += c;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        on(JSON.parse(text) as Record<string, unknown>);
      } catch {
        // not ours
      }
    }
  });
}

interface Phase {
  /** In-relay forward time (arrival → last viewer's copy sent), ms, from the gateway's histogram: bucket upper bounds. */
  inRelay?: { p50: number; p99: number };
  /** CPU of the viewers' (or sink's) processes together, % of one core. */
  peersCpuPct: number;
  viewers: number;
  p50: number;
  p99: number;
  samples: number;
  delivered: number;
  cpuPct: number;
}

/** Latency samples and packets over a window, from a child printing {packets, latencyUs} lines. */
function collector(child: SupervisedChild) {
  let packets = 0;
  let samples: number[] = [];
  let ready = false;
  lines(child, (l) => {
    if (typeof l.ready === "number" || Array.isArray(l.ports)) ready = true;
    if (typeof l.packets === "number") packets = l.packets;
    if (Array.isArray(l.latencyUs)) samples.push(...(l.latencyUs as number[]));
  });
  return {
    ready: () => ready,
    packets: () => packets,
    reset: (): void => {
      samples = [];
    },
    take: () => samples,
  };
}

async function measure(
  pid: number,
  viewers: number,
  c: Pick<ReturnType<typeof collector>, "packets" | "reset" | "take">,
  sent: () => number,
  peers: number[],
  atStart?: () => Promise<void>,
): Promise<Phase> {
  await sleep(SETTLE_S * 1000);
  await atStart?.();
  c.reset();
  const peerTicks = () => peers.reduce((n, p) => n + ticks(p), 0);
  const q0 = peerTicks();
  const t0 = ticks(pid);
  const p0 = c.packets();
  const s0 = sent();
  const w0 = performance.now();
  await sleep(WINDOW_S * 1000);
  const seconds = (performance.now() - w0) / 1000;
  const cpuPct = ((ticks(pid) - t0) / CLK_TCK / seconds) * 100;
  const peersCpuPct = ((peerTicks() - q0) / CLK_TCK / seconds) * 100;
  const got = c.packets() - p0;
  const expected = (sent() - s0) * viewers;
  const ms = c.take().map((us) => us / 1000).sort((a, b) => a - b);
  return { viewers, p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), samples: ms.length, delivered: expected > 0 ? got / expected : 0, cpuPct, peersCpuPct };
}

async function startGateway(natsUrl: string, profDir?: string) {
  const port = await reservePort();
  const env = {
    ...process.env,
    NATS_URL: natsUrl,
    HTTP_PORT: String(port),
    NODE_ID: "bench-gw",
    WEBRTC_LOOPBACK_ONLY: "true",
    RELAY_MAX_VIEWERS_PER_CAMERA: "10000",
    RELAY_MAX_VIEWERS: "10000",
    LOG_LEVEL: "warn",
  };
  // The launcher puts CAMFLEET_NODE_FLAGS on node's command line (--cpu-prof is not allowed in NODE_OPTIONS).
  // BENCH_NODE_FLAGS: Node flags for the gateway, after the launcher's own (e.g. "--max-semi-space-size=16").
  const flags = `${process.env.BENCH_NODE_FLAGS ?? ""}${profDir !== undefined ? ` --cpu-prof --cpu-prof-dir=${profDir}` : ""}`;
  const gw = await superviseSpawn(CAMFLEET_BIN, ["gateway"], { env: { ...env, CAMFLEET_NODE_FLAGS: flags }, stdio: ["ignore", "ignore"] });
  cleanups.push(() => gw.terminate(5_000));
  const url = `http://${HOST}:${port}`;
  await waitUntil(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200, 20_000, "gateway ready", 100);
  return { gw, url };
}

/** Viewers in processes of at most VIEWERS_PER_PROCESS each, so no one process's decryption queue dominates the figures. */
async function relayViewers(url: string, n: number) {
  const children: SupervisedChild[] = [];
  const cs: Array<ReturnType<typeof collector>> = [];
  for (let left = n; left > 0; left -= VIEWERS_PER_PROCESS) {
    const k = Math.min(VIEWERS_PER_PROCESS, left);
    const child = await superviseSpawn(process.execPath, ["--import", "tsx", VIEWERS, `${url}/whep/bench`, String(k), "--latency"], { stdio: ["ignore", "pipe"] });
    cleanups.push(() => child.terminate(5_000));
    children.push(child);
    cs.push(collector(child));
  }
  const c = {
    ready: () => cs.every((x) => x.ready()),
    packets: () => cs.reduce((a, x) => a + x.packets(), 0),
    reset: () => cs.forEach((x) => x.reset()),
    take: () => cs.flatMap((x) => x.take()),
  };
  await waitUntil(() => c.ready() && c.packets() > n * 50, 60_000, `${n} relay viewers receiving`, 100);
  return { child: { terminate: async (ms: number) => void (await Promise.all(children.map((ch) => ch.terminate(ms)))) }, c, pids: children.map((ch) => ch.child.pid!) };
}

/** Bucket counts of camfleet_relay_forward_seconds from the gateway's /metrics. */
async function forwardBuckets(url: string): Promise<Map<number, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new Map<number, number>();
  for (const line of text.split("\n")) {
    const r = /^camfleet_relay_forward_seconds_bucket\{le="([^"]+)"[^}]*\} (\d+)/.exec(line);
    if (r) m.set(r[1] === "+Inf" ? Infinity : Number(r[1]), Number(r[2]));
  }
  return m;
}

/** A quantile (ms) from cumulative bucket deltas: the upper bound of the bucket it falls in. */
function bucketQuantile(before: Map<number, number>, after: Map<number, number>, q: number): number {
  const les = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  if (total <= 0) return NaN;
  for (const le of les) if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= q * total) return le * 1000;
  return Infinity;
}

async function relayPhases(url: string, gwPid: number, sent: () => number): Promise<{ idleCpu: number; phases: Phase[] }> {
  await sleep(SETTLE_S * 1000);
  const t0 = ticks(gwPid);
  await sleep(WINDOW_S * 1000);
  const idleCpu = ((ticks(gwPid) - t0) / CLK_TCK / WINDOW_S) * 100;
  const phases: Phase[] = [];
  for (const n of COUNTS) {
    const v = await relayViewers(url, n);
    let b0 = new Map<number, number>();
    const phase = await measure(gwPid, n, v.c, sent, v.pids, async () => void (b0 = await forwardBuckets(url)));
    const b1 = await forwardBuckets(url);
    phases.push({ ...phase, inRelay: { p50: bucketQuantile(b0, b1, 0.5), p99: bucketQuantile(b0, b1, 0.99) } });
    await v.child.terminate(5_000);
    await waitUntil(async () => ((await (await fetch(`${url}/webrtc/stats`)).json()) as { viewers: number }).viewers === 0, 20_000, "viewers gone", 100);
  }
  return { idleCpu, phases };
}

async function baselinePhase(n: number): Promise<Phase> {
  const sink = await superviseSpawn(process.execPath, ["--import", "tsx", BASELINE, "sink", String(n)], { stdio: ["ignore", "pipe"] });
  cleanups.push(() => sink.terminate(5_000));
  let ports: number[] = [];
  let fwdPort = 0;
  const c = collector(sink);
  lines(sink, (l) => {
    if (Array.isArray(l.ports)) ports = l.ports as number[];
  });
  await waitUntil(() => ports.length === n, 20_000, "sink ready", 50);
  const fwd = await superviseSpawn(process.execPath, ["--import", "tsx", BASELINE, "forward", ...ports.map(String)], { stdio: ["ignore", "pipe"] });
  cleanups.push(() => fwd.terminate(5_000));
  lines(fwd, (l) => {
    if (typeof l.port === "number") fwdPort = l.port;
  });
  await waitUntil(() => fwdPort > 0, 20_000, "forwarder ready", 50);
  const tx = createSocket("udp4");
  const cam = syntheticCamera((p) => tx.send(p, fwdPort, HOST));
  try {
    return await measure(fwd.child.pid!, n, c, cam.sent, [sink.child.pid!]);
  } finally {
    cam.stop();
    tx.close();
    await fwd.terminate(5_000);
    await sink.terminate(5_000);
  }
}

async function profileGateway(natsUrl: string, n: number): Promise<string[]> {
  const profDir = await mkdtemp(join(tmpdir(), "camfleet-bench-relay-prof-"));
  cleanups.push(() => rm(profDir, { recursive: true, force: true }));
  const { gw, url } = await startGateway(natsUrl, profDir);
  const pub = await publisher(url);
  const v = await relayViewers(url, n);
  await sleep((SETTLE_S + Math.min(WINDOW_S, 10)) * 1000);
  await v.child.terminate(5_000);
  pub.stop();
  await gw.terminate(10_000); // SIGTERM: node writes the profile on exit
  const best = await busiestProfile(profDir);
  return best === undefined ? ["(no .cpuprofile written)"] : topSelf(best, { top: 12, label: "gateway profile" });
}

async function publisher(url: string): Promise<{ stop(): void; sent(): number }> {
  let up = false;
  let failed: string | undefined;
  const session = startWhip({ url: `${url}/whip/bench`, loopbackOnly: true, onUp: () => (up = true), onFailed: (d) => (failed = d) });
  cleanups.push(() => session.stop());
  await waitUntil(() => up || failed !== undefined, 15_000, "WHIP publisher up", 50);
  if (failed !== undefined) throw new Error(`WHIP publisher failed: ${failed}`);
  const cam = syntheticCamera((p) => session.writeRtp(p));
  return { stop: () => cam.stop(), sent: cam.sent };
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-bench-relay-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const nats = new NatsServerProcess({ name: "bench-relay", storeDir: join(dir, "store") });
  cleanups.push(() => nats.stop());
  await nats.start();
  const nc = await connect({ servers: nats.url });
  cleanups.push(() => nc.close());
  await ensureJetStream(nc);
  const cameras = await new Kvm(nc).open(BUCKETS.cameras);
  await cameras.put(kvKeys.camera("bench"), JSON.stringify(CameraSpecSchema.parse({ id: "bench", url: "rtsp://127.0.0.1:1/bench", publish: "always" })));

  console.log(`relay benchmark: one ${BITRATE_KBPS} kbit/s camera (${FPS} fps, ${Math.ceil((BITRATE_KBPS * 125) / FPS / PAYLOAD)} packets a frame, GOP ${GOP}), viewers ${COUNTS.join(", ")}, window ${WINDOW_S} s`);
  const { gw, url } = await startGateway(nats.url);
  const pub = await publisher(url);
  const relay = await relayPhases(url, gw.child.pid!, pub.sent);
  pub.stop();
  await gw.terminate(5_000);

  const base: Phase[] = [];
  for (const n of COUNTS) base.push(await baselinePhase(n));

  console.log("");
  console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(", ")} (2 cores)`);
  console.log("| path | viewers | end-to-end p50 ms | end-to-end p99 ms | in-relay p50 ms (≤) | in-relay p99 ms (≤) | samples | delivered | forwarder CPU % | CPU % per viewer | receivers' CPU % |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  console.log(`| relay (publisher only) | 0 | - | - | - | - | - | - | ${f1(relay.idleCpu)} | - | - |`);
  for (const p of relay.phases) {
    console.log(
      `| relay | ${p.viewers} | ${f2(p.p50)} | ${f2(p.p99)} | ${f2(p.inRelay?.p50 ?? NaN)} | ${f2(p.inRelay?.p99 ?? NaN)} | ${p.samples} | ${(p.delivered * 100).toFixed(1)} % | ${f1(p.cpuPct)} | ${f2((p.cpuPct - relay.idleCpu) / p.viewers)} | ${f1(p.peersCpuPct)} |`,
    );
  }
  for (const p of base) {
    console.log(`| baseline: plain UDP forward | ${p.viewers} | ${f2(p.p50)} | ${f2(p.p99)} | - | - | ${p.samples} | ${(p.delivered * 100).toFixed(1)} % | ${f1(p.cpuPct)} | ${f2(p.cpuPct / p.viewers)} | ${f1(p.peersCpuPct)} |`);
  }
  console.log("");
  let missed = false;
  for (const p of relay.phases) {
    const b = base.find((x) => x.viewers === p.viewers);
    const added50 = b ? p.p50 - b.p50 : NaN;
    const added99 = b ? p.p99 - b.p99 : NaN;
    // Two readings of "added latency", both judged: RTP in → RTP out inside the relay (from the packet's
    // arrival in the relay's handler to its last viewer copy handed to the socket), and what the whole
    // WebRTC path adds over plain UDP end to end (which also carries queueing before the handler runs,
    // the publisher's and viewers' SRTP, and the viewers' processes competing for the same 2 cores).
    const inOk = (p.inRelay?.p99 ?? Infinity) <= TARGET_P99_MS;
    const e2eOk = added99 <= TARGET_P99_MS;
    missed ||= !inOk || !e2eOk;
    console.log(
      `${p.viewers} viewers: inside the relay p50 ≤ ${f2(p.inRelay?.p50 ?? NaN)} ms, p99 ≤ ${f2(p.inRelay?.p99 ?? NaN)} ms ${inOk ? "PASS" : "FAIL"}; ` +
        `end to end the relay path adds p50 ${f2(added50)} ms, p99 ${f2(added99)} ms over plain UDP ${e2eOk ? "PASS" : "FAIL"} (target p99 ≤ ${TARGET_P99_MS} ms)`,
    );
  }
  const max = relay.phases.find((p) => p.viewers >= TARGET_VIEWERS);
  const viewersOk = max !== undefined && max.delivered >= 0.95;
  missed ||= !viewersOk;
  console.log(
    max === undefined
      ? `viewers target: not measured (BENCH_VIEWERS has no count ≥ ${TARGET_VIEWERS})`
      : `${max.viewers} viewers of a ${BITRATE_KBPS} kbit/s camera: ${(max.delivered * 100).toFixed(1)} % of packets delivered, relay CPU ${f1(max.cpuPct)} % ${viewersOk ? "PASS" : "FAIL"} (target ≥ ${TARGET_VIEWERS} viewers, ≥ 95 % delivered)`,
  );
  console.log("2-core machine, viewers' process and relay share the CPUs; figures are noisy.");

  if (PROFILE === "1" || (PROFILE === "auto" && missed)) {
    const n = Math.max(...COUNTS);
    console.log(`\nwhere the gateway's time goes with ${n} viewers (node --cpu-prof, separate run):`);
    for (const line of await profileGateway(nats.url, n)) console.log(line);
  }
}

try {
  await main();
} finally {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
}
process.exit(0);
