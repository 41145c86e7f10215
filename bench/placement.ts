// Placement convergence: 1,000 sim cameras appear at once on a 3-node fleet.
// Prints how long until every camera has exactly one owner, and until every
// one reports STREAMING, and how even the spread is.
// Target (issue): at most 10 s, balance within ±10 %.
import { countBy, startBench, waitUntil } from "./fleet-bench.ts";

const CAMERAS = Number(process.env.BENCH_CAMERAS ?? 1000);
const NODES = Number(process.env.BENCH_NODES ?? 3);

const bench = await startBench();
try {
  for (let i = 1; i <= NODES; i++) await bench.startNode(`p${i}`, { MAX_CAMERAS: String(CAMERAS) });
  await bench.watchLeases();

  const t0 = performance.now();
  // Written straight to the bucket in one pipelined burst: this measures placement, not the control API.
  await Promise.all(
    Array.from({ length: CAMERAS }, (_, i) =>
      bench.cameras.put(`cam${String(i).padStart(4, "0")}`, JSON.stringify({ id: `cam${String(i).padStart(4, "0")}`, url: `rtsp://127.0.0.1/sim/${i}` })),
    ),
  );
  const written = performance.now() - t0;
  const owned = await waitUntil(() => bench.owners.size === CAMERAS, 60_000, "all cameras owned");
  const streaming = await waitUntil(
    () => bench.states.size === CAMERAS && [...bench.states.values()].every((s) => s.state === "STREAMING"),
    60_000,
    "all cameras STREAMING",
  );
  const spread = countBy(bench.owners.values(), (o) => o.node);
  const even = CAMERAS / NODES;
  const worst = Math.max(...[...spread.values()].map((n) => Math.abs(n - even) / even));
  const total = written + owned + streaming;

  console.log(`\nPlacement convergence: ${CAMERAS} sim cameras on ${NODES} nodes (one nats-server, loopback)\n`);
  console.log("| measure | value |");
  console.log("|---|---|");
  console.log(`| specs written (pipelined KV puts) | ${written.toFixed(0)} ms |`);
  console.log(`| + until every camera has one owner | ${(written + owned).toFixed(0)} ms |`);
  console.log(`| + until every camera reports STREAMING | ${total.toFixed(0)} ms |`);
  console.log(`| cameras per node | ${[...spread.entries()].sort().map(([n, c]) => `${n}=${c}`).join(", ")} |`);
  console.log(`| worst deviation from even | ${(worst * 100).toFixed(1)} % |`);
  console.log(`\ntarget: converged within 10000 ms: ${total <= 10_000 ? "PASS" : "FAIL"}; balance within ±10 %: ${worst <= 0.1 ? "PASS" : "FAIL"}`);
} finally {
  await bench.close();
}
