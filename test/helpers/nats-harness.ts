// Real nats-server instances for tests: free ports, temp store dirs, 127.0.0.1 only.
//
// Teardown pattern: every helper takes `onCleanup`, vitest's own registration
// function for the scope the servers should live in, and registers its
// teardown there BEFORE starting anything, so a failed start or a failed assert
// still stops every server and removes the temp dirs:
//
//   test("…", async () => {
//     const nats = await startNats({ onCleanup: onTestFinished });
//     …
//   });
//
//   // vitest ignores hooks registered inside beforeAll: collect teardowns instead.
//   const teardown: Array<() => Promise<void>> = [];
//   afterAll(async () => { for (const fn of teardown.reverse()) await fn(); });
//   beforeAll(async () => { cluster = await startNatsCluster({ onCleanup: (fn) => void teardown.push(fn) }); });
//
// `close()` does the same teardown early (e.g. to assert the process is gone);
// it is idempotent, so the registered cleanup is harmless afterwards.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, NatsServerProcess, type NatsServerOptions } from "../../runtime/nats-server.ts";

/** Registers a teardown function: `onTestFinished` inside a test, or a collector run by a top-level afterAll. */
export type RegisterCleanup = (fn: () => Promise<void>) => void;

export interface StartNatsOptions {
  onCleanup: RegisterCleanup;
  /** server_name. Default "test". */
  name?: string;
  /** Milliseconds to wait for readiness. Default 10000. */
  readyTimeoutMs?: number;
  /** Each line of the server's log. Default: dropped (the tail stays in `server.stderrTail()`). */
  onLog?: (line: string) => void;
}

export interface NatsHandle {
  /** Client URL, nats://127.0.0.1:PORT. */
  url: string;
  server: NatsServerProcess;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its temp store dir. Idempotent. */
  close(): Promise<void>;
}

export interface StartNatsClusterOptions {
  onCleanup: RegisterCleanup;
  /** Number of servers. Default 3. */
  size?: number;
  /** Milliseconds each server may take to be ready (JetStream meta leader elected). Default 15000. */
  readyTimeoutMs?: number;
  /** Each log line, with the server_name it came from. */
  onLog?: (server: string, line: string) => void;
  /** Members do not advertise each other's client URLs: clients cannot roam (for partition tests). */
  noAdvertise?: boolean;
}

export interface NatsClusterHandle {
  /** Client URLs of all servers, in server order. */
  urls: string[];
  /** The servers (names n1, n2, …), each with its own stop() / kill() / restart(). */
  servers: NatsServerProcess[];
  /** Stops every server and removes the temp store dirs. Idempotent. */
  close(): Promise<void>;
}

/** A standalone JetStream server on free 127.0.0.1 ports with a temp store dir. */
export async function startNats(opts: StartNatsOptions): Promise<NatsHandle> {
  const root = await mkdtemp(join(tmpdir(), "camfleet-nats-"));
  const server = new NatsServerProcess({
    name: opts.name ?? "test",
    storeDir: join(root, "store"),
    readyTimeoutMs: opts.readyTimeoutMs,
    onLog: opts.onLog,
  });
  const close = once(async () => {
    try {
      await server.stop();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  opts.onCleanup(close);
  await server.start();
  return { url: server.url, server, close };
}

/**
 * An n-server JetStream cluster on 127.0.0.1. All servers start together (a lone
 * member never gets ready: JetStream needs a quorum to elect its meta leader);
 * resolves once every one is ready.
 */
export async function startNatsCluster(opts: StartNatsClusterOptions): Promise<NatsClusterHandle> {
  const size = opts.size ?? 3;
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`startNatsCluster: size must be a positive integer, got ${size}`);
  const root = await mkdtemp(join(tmpdir(), "camfleet-nats-cluster-"));
  const servers: NatsServerProcess[] = [];
  const close = once(async () => {
    try {
      await Promise.all(servers.map((s) => s.stop()));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  opts.onCleanup(close);

  // Route ports must be known up front: every member is given the full route list.
  const clusterPorts: number[] = [];
  for (let i = 0; i < size; i++) clusterPorts.push(await freePort());
  const routes = clusterPorts.map((p) => `nats-route://127.0.0.1:${p}`);
  for (let i = 0; i < size; i++) {
    const name = `n${i + 1}`;
    const options: NatsServerOptions = {
      name,
      storeDir: join(root, name),
      cluster: { name: "camfleet-test", port: clusterPorts[i], routes, ...(opts.noAdvertise === true ? { noAdvertise: true } : {}) },
      readyTimeoutMs: opts.readyTimeoutMs ?? 15_000,
    };
    const onLog = opts.onLog;
    if (onLog) options.onLog = (line) => onLog(name, line);
    servers.push(new NatsServerProcess(options));
  }

  // One failure dooms the rest (no quorum), so kill them rather than let them
  // wait out their deadlines, and report the first failure, not the kills it
  // caused. allSettled leaves no rejection unobserved.
  let firstError: unknown;
  await Promise.allSettled(
    servers.map((s) =>
      s.start().catch(async (err: unknown) => {
        firstError ??= err;
        await Promise.all(servers.map((o) => o.kill()));
      }),
    ),
  );
  if (firstError !== undefined) throw firstError;
  return { urls: servers.map((s) => s.url), servers, close };
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}
