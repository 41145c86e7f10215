// What the gateway benchmarks (gateway-status.ts, event-fanout.ts) share: a
// nats-server, `camfleet gateway` and `camfleet node` processes started the
// way users start them (bin/camfleet), and one list of clean-ups that runs on
// the normal end, on an error and on Ctrl-C / SIGTERM alike.
//
// Children run under superviseSpawn: their own process group (a terminal's
// Ctrl-C reaches only this process, which then stops them in order) and a
// parent-death signal (they die with this process even after a kill -9).

import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { superviseSpawn, type SupervisedChild } from "../runtime/infra/child-process.ts";
import { NatsServerProcess } from "../runtime/infra/nats-server.ts";
import { ensureJetStream } from "../runtime/index.ts";
import { subjects } from "../subjects/index.ts";
import { reservePort } from "../test/helpers/ports.ts";
import { waitUntil } from "./fleet-bench.ts";
import { busiestProfile, topSelf } from "./proc-profile.ts";

export const CAMFLEET_BIN = fileURLToPath(new URL("../bin/camfleet", import.meta.url));
export const HOST = "127.0.0.1";

const cleanups: Array<() => Promise<unknown>> = [];

/** Registers a clean-up; they run in reverse order (clients before the server they talk to). */
export function onCleanup(fn: () => Promise<unknown>): void {
  cleanups.push(fn);
}

async function runCleanups(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) await fn().catch((err: unknown) => console.error("cleanup:", err));
}

/**
 * Runs a benchmark's main with every clean-up guaranteed: after it returns,
 * after it throws (exit code 1), and on SIGINT/SIGTERM (130/143).
 */
export async function runBench(main: () => Promise<void>): Promise<never> {
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping`);
    void runCleanups().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let code = 0;
  try {
    await main();
  } catch (err) {
    console.error(err);
    code = 1;
  }
  await runCleanups();
  process.exit(code);
}

/** A nats-server with JetStream on loopback, the camfleet streams and buckets made, and a client. */
export async function startBenchNats(name: string): Promise<{ nats: NatsServerProcess; nc: NatsConnection }> {
  const dir = await mkdtemp(join(tmpdir(), `camfleet-${name}-`));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const nats = new NatsServerProcess({ name, storeDir: join(dir, "store") });
  onCleanup(() => nats.stop());
  await nats.start();
  const nc = await connect({ servers: nats.url, name: `${name}-client` });
  onCleanup(() => nc.close());
  await ensureJetStream(nc);
  return { nats, nc };
}

/** Environment of a child: inherited (PATH, and the test suite's leak-check mark if any), with ours on top. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { ...process.env, LOG_LEVEL: "warn", ...extra };
}

/** `camfleet gateway` as users run it, on a free loopback port; resolves once /readyz answers 200. */
export async function startGatewayProcess(natsUrl: string, env: Record<string, string> = {}): Promise<{ gw: SupervisedChild; url: string; pid: number }> {
  const port = await reservePort();
  const gw = superviseSpawn(CAMFLEET_BIN, ["gateway"], {
    env: childEnv({ NATS_URL: natsUrl, HTTP_HOST: HOST, HTTP_PORT: String(port), NODE_ID: "bench-gw", WEBRTC_LOOPBACK_ONLY: "true", ...env }),
  });
  onCleanup(() => gw.terminate(5_000));
  const url = `http://${HOST}:${port}`;
  await waitUntil(
    async () => {
      if (gw.hasExited()) throw new Error(`gateway exited: ${gw.stderrTail()}`);
      return (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200;
    },
    30_000,
    "gateway ready",
    100,
  );
  return { gw, url, pid: gw.child.pid! };
}

/** `camfleet node` with sim actors; resolves once it is listed by `camfleet.ctl.nodes.list`. */
export async function startNodeProcess(nc: NatsConnection, natsUrl: string, id: string): Promise<{ node: SupervisedChild; pid: number }> {
  const node = superviseSpawn(CAMFLEET_BIN, ["node"], { env: childEnv({ NATS_URL: natsUrl, NODE_ID: id, HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim" }) });
  onCleanup(() => node.terminate(5_000));
  await waitUntil(
    async () => {
      if (node.hasExited()) throw new Error(`node exited: ${node.stderrTail()}`);
      const m = await nc.request(subjects.ctl.nodesList, "{}", { timeout: 2000 }).catch(() => undefined);
      return m?.string().includes(`"${id}"`) ?? false;
    },
    30_000,
    `node ${id} ready`,
    100,
  );
  return { node, pid: node.child.pid! };
}

/**
 * Node flags for the gateway (the launcher puts CAMFLEET_NODE_FLAGS on node's command line; --cpu-prof is not
 * allowed in NODE_OPTIONS): BENCH_NODE_FLAGS, and with BENCH_PROFILE=1 a CPU profile written when it stops.
 */
export async function gatewayFlags(): Promise<{ env: Record<string, string>; profDir?: string }> {
  const extra = process.env.BENCH_NODE_FLAGS ?? "";
  if (process.env.BENCH_PROFILE !== "1") return { env: { CAMFLEET_NODE_FLAGS: extra } };
  const profDir = await mkdtemp(join(tmpdir(), "camfleet-bench-gw-prof-"));
  onCleanup(() => rm(profDir, { recursive: true, force: true }));
  return { env: { CAMFLEET_NODE_FLAGS: `${extra} --cpu-prof --cpu-prof-dir=${profDir}` }, profDir };
}

/** Stops the gateway (SIGTERM: node writes its profile on exit) and prints its top functions by self time. */
export async function printGatewayProfile(gw: SupervisedChild, profDir: string): Promise<void> {
  await gw.terminate(10_000);
  const best = await busiestProfile(profDir);
  console.log("");
  for (const line of best === undefined ? ["(no .cpuprofile written)"] : topSelf(best, { top: 15, label: "gateway profile, whole run" })) console.log(line);
}

/** VmRSS of a process from /proc/<pid>/status, bytes; undefined once it is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const mb = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? "-" : (bytes / 1024 / 1024).toFixed(1));
