// GET /cameras/{id}/status through the gateway against the bare NATS request
// for the same status (the floor), at the same concurrency, on the same node,
// in one run (issue 13, "Benchmark").
//
// Set-up: a nats-server, one `camfleet node` process with sim actors
// (CAMFLEET_ACTOR_KIND=sim: the status it answers has the real shape, there is
// no FFmpeg behind it) running camera `bench`, and one `camfleet gateway`
// process as users run it. The load comes from this process:
//   - bare NATS: CONCURRENCY loops, each a request on
//     camfleet.ctl.camera.bench.status and the next as soon as its reply came;
//   - bare NATS, the route's two requests: the same loops, each doing what the
//     route does over NATS (camfleet.ctl.cameras.get for the spec and the
//     lease, then the status), one after the other: the floor of the route
//     as it is built;
//   - gateway: autocannon with CONCURRENCY connections (one request in flight
//     on each) on GET /cameras/bench/status.
// Latency of every row is taken the same way, per response with hrtime (for
// autocannon from its `response` event), so the rows compare. Rows run
// interleaved, BENCH_ROUNDS rounds of BENCH_DURATION_S each, after a warm-up;
// the table shows each row's median round.
//
//   npm run bench:gateway
//   BENCH_DURATION_S=5 BENCH_ROUNDS=1 BENCH_CONCURRENCY=50 npm run bench:gateway
// BENCH_PROFILE=1 runs the gateway with --cpu-prof and prints where its time
// went; BENCH_NODE_FLAGS adds Node flags to the gateway.
//
// On this 2-core machine the load generator, the gateway, the node and
// nats-server share the CPUs (and other work may run): read the CPU columns.

import autocannon from "autocannon";
import { loadavg } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { ControlClient } from "../runtime/client/control-client.ts";
import { subjects } from "../subjects/index.ts";
import { quantile, waitUntil } from "./fleet-bench.ts";
import { gatewayFlags, printGatewayProfile, runBench, startBenchNats, startGatewayProcess, startNodeProcess, sleep } from "./gateway-procs.ts";
import { CLK_TCK, cpuTicks } from "./proc-profile.ts";

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 50);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WARMUP_S = 2;
const CAMERA = "bench";
const REQUEST_TIMEOUT_MS = 5000;

interface Round {
  requests: number;
  seconds: number;
  errors: number;
  /** Sorted latencies, ms. */
  ms: number[];
  /** CPU of the node and the gateway over the round, % of one core. */
  nodeCpu: number;
  gatewayCpu: number;
}

interface Row {
  name: string;
  run: (seconds: number) => Promise<Omit<Round, "nodeCpu" | "gatewayCpu">>;
  rounds: Round[];
}

/** CONCURRENCY loops of `trip` for `seconds`; a failed trip (error reply, timeout) counts as an error and the loop goes on. */
async function loops(seconds: number, trip: () => Promise<boolean>) {
  const ms: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const s = performance.now();
        const ok = await trip().catch(() => false);
        if (ok) ms.push(performance.now() - s);
        else errors++;
      }
    }),
  );
  return { requests: ms.length, seconds: (performance.now() - t0) / 1000, errors, ms: ms.sort((a, b) => a - b) };
}

/** One NATS request; true for an `{ok: true}` reply. The reply is parsed, as any client would. */
async function natsOk(nc: NatsConnection, subject: string, body: string): Promise<boolean> {
  const m = await nc.request(subject, body, { timeout: REQUEST_TIMEOUT_MS });
  return (m.json() as { ok?: boolean }).ok === true;
}

async function gatewayRun(url: string, seconds: number) {
  const ms: number[] = [];
  let non2xx = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      { url: `${url}/cameras/${CAMERA}/status`, connections: CONCURRENCY, pipelining: 1, duration: seconds, timeout: REQUEST_TIMEOUT_MS / 1000 },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    instance.on("response", (_client, status, _bytes, responseTime) => {
      if (status >= 200 && status < 300) ms.push(responseTime);
      else non2xx++;
    });
  });
  return { requests: ms.length, seconds: result.duration, errors: non2xx + result.errors + result.timeouts, ms: ms.sort((a, b) => a - b) };
}

async function main(): Promise<void> {
  const { nats, nc } = await startBenchNats("bench-gw-status");
  const node = await startNodeProcess(nc, nats.url, "bench-n1");
  const ctl = new ControlClient(nc, { timeoutMs: 2000 });
  await ctl.putCamera({ id: CAMERA, url: "rtsp://127.0.0.1:1/bench" });
  await waitUntil(async () => (await ctl.cameraStatus(CAMERA).catch(() => undefined))?.state === "STREAMING", 30_000, "camera bench STREAMING", 100);
  const { env, profDir } = await gatewayFlags();
  const { gw: gwProc, url, pid: gwPid } = await startGatewayProcess(nats.url, env);
  const first = await fetch(`${url}/cameras/${CAMERA}/status`);
  const body = (await first.json()) as { state?: string; node?: string };
  if (first.status !== 200 || body.state !== "STREAMING") throw new Error(`GET /cameras/${CAMERA}/status: ${first.status} ${JSON.stringify(body)}`);

  const statusSubject = subjects.ctl.cameraStatus(CAMERA);
  const getBody = JSON.stringify({ id: CAMERA });
  const rows: Row[] = [
    { name: "bare NATS request (floor)", run: (s) => loops(s, () => natsOk(nc, statusSubject, "")), rounds: [] },
    {
      name: "bare NATS, the route's 2 requests",
      run: (s) => loops(s, async () => (await natsOk(nc, subjects.ctl.camerasGet, getBody)) && (await natsOk(nc, statusSubject, ""))),
      rounds: [],
    },
    { name: "gateway GET /cameras/{id}/status", run: (s) => gatewayRun(url, s), rounds: [] },
  ];

  console.log(
    `gateway status benchmark: ${CONCURRENCY} concurrent clients, ${ROUNDS} round(s) of ${DURATION_S} s per row, interleaved; ` +
      `node: a \`camfleet node\` process with sim actors (CAMFLEET_ACTOR_KIND=sim); gateway: a \`camfleet gateway\` process; ` +
      `load generator (NATS loops, autocannon) in this process`,
  );
  for (const r of rows) await r.run(WARMUP_S);
  for (let round = 0; round < ROUNDS; round++) {
    for (const r of rows) {
      const n0 = cpuTicks(node.pid) ?? 0;
      const g0 = cpuTicks(gwPid) ?? 0;
      const res = await r.run(DURATION_S);
      const pct = (t0: number, pid: number) => (((cpuTicks(pid) ?? t0) - t0) / CLK_TCK / res.seconds) * 100;
      r.rounds.push({ ...res, nodeCpu: pct(n0, node.pid), gatewayCpu: pct(g0, gwPid) });
      await sleep(500);
    }
  }

  const rps = (x: Round) => x.requests / x.seconds;
  const median = (r: Row): Round => [...r.rounds].sort((a, b) => rps(a) - rps(b))[Math.floor(r.rounds.length / 2)]!;
  console.log("");
  console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(", ")} (2 cores)`);
  // CPU per request hardly depends on what else the machine runs; req/s and latency do.
  const usPerReq = (pct: number, x: Round) => ((pct / 100) * x.seconds * 1e6) / Math.max(1, x.requests);
  console.log("| path | req/s | p50 ms | p99 ms | errors | node CPU % | node CPU µs/req | gateway CPU % | gateway CPU µs/req | rounds' req/s |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    const m = median(r);
    console.log(
      `| ${r.name} | ${rps(m).toFixed(0)} | ${quantile(m.ms, 0.5).toFixed(2)} | ${quantile(m.ms, 0.99).toFixed(2)} | ${r.rounds.reduce((a, x) => a + x.errors, 0)} | ${m.nodeCpu.toFixed(0)} | ${usPerReq(m.nodeCpu, m).toFixed(0)} | ${m.gatewayCpu.toFixed(0)} | ${usPerReq(m.gatewayCpu, m).toFixed(0)} | ${r.rounds.map((x) => rps(x).toFixed(0)).join(", ")} |`,
    );
  }
  const floor = median(rows[0]!);
  const two = median(rows[1]!);
  const gw = median(rows[2]!);
  console.log("");
  console.log(
    `overhead of the gateway over the bare NATS request: throughput ${(rps(floor) / rps(gw)).toFixed(2)}x lower, ` +
      `p50 ${(quantile(gw.ms, 0.5) / quantile(floor.ms, 0.5)).toFixed(2)}x, p99 ${(quantile(gw.ms, 0.99) / quantile(floor.ms, 0.99)).toFixed(2)}x; ` +
      `over the route's own 2 NATS requests: throughput ${(rps(two) / rps(gw)).toFixed(2)}x lower, p50 ${(quantile(gw.ms, 0.5) / quantile(two.ms, 0.5)).toFixed(2)}x`,
  );
  console.log("errors: error replies, timeouts and non-2xx responses over all measured rounds. 2-core machine shared with other work; figures are noisy.");
  if (profDir !== undefined) await printGatewayProfile(gwProc, profDir);
}

await runBench(main);
