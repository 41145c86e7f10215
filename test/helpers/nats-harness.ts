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
//
// Ports come from reservePort() (below the kernel's ephemeral range, so nobody
// takes them between the pick and the bind, nor while a killed server is down
// before its restart). Should one be taken all the same, by a fixed-port
// program of someone else's, the first start is tried again with fresh ports
// (at most START_ATTEMPTS times), and the harness says so on stderr.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NatsServerProcess, NatsServerStartError, type NatsServerOptions } from "../../runtime/infra/nats-server.ts";
import { reservePort } from "./ports.ts";

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
  /**
   * Text of a nats-server configuration file, for settings that have no flag,
   * e.g. `jetstream { max_file_store: 2GB }`. Ports, store dir and names are
   * the harness's (its flags win).
   */
  config?: string;
  /** A nats-server config file (auth, TLS, accounts); the harness's own flags win over it. Instead of `config`. */
  configFile?: string;
  /** Extra environment of the server, e.g. the passwords a config file names as `$VAR`. */
  env?: Record<string, string>;
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
  /** Text of a configuration file every member gets, as for startNats. */
  config?: string;
  /** A config file every member starts with (auth, TLS); the harness's flags (names, ports, routes, store) win over it. */
  configFile?: string;
  /** Extra environment of every member. */
  env?: Record<string, string>;
}

export interface NatsClusterHandle {
  /** Client URLs of all servers, in server order. */
  urls: string[];
  /** The servers (names n1, n2, …), each with its own stop() / kill() / restart(). */
  servers: NatsServerProcess[];
  /** Stops every server and removes the temp store dirs. Idempotent. */
  close(): Promise<void>;
}

const START_ATTEMPTS = 3;

/** A standalone JetStream server on free 127.0.0.1 ports with a temp store dir. */
export async function startNats(opts: StartNatsOptions): Promise<NatsHandle> {
  const root = await mkdtemp(join(tmpdir(), "camfleet-nats-"));
  let server: NatsServerProcess | undefined;
  const close = once(async () => {
    try {
      await server?.stop();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  opts.onCleanup(close);
  const configFile = opts.configFile ?? (await writeConfig(root, opts.config));
  const started = await withFreshPorts(async (attempt) => {
    server = new NatsServerProcess({
      name: opts.name ?? "test",
      port: await reservePort(),
      monitorPort: await reservePort(),
      storeDir: join(root, `store-${attempt}`),
      readyTimeoutMs: opts.readyTimeoutMs,
      onLog: opts.onLog,
      ...(configFile !== undefined ? { configFile } : {}),
      ...(opts.env !== undefined ? { env: { ...process.env, ...opts.env } } : {}),
    });
    await server.start();
    return server;
  });
  return { url: started.url, server: started, close };
}

/**
 * Runs `start` again with fresh ports while it fails on a taken port (never
 * for any other failure), at most START_ATTEMPTS times, and says so on stderr.
 */
export async function withFreshPorts<T>(start: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(attempt);
    } catch (err) {
      if (!(err instanceof NatsServerStartError && err.portInUse) || attempt >= START_ATTEMPTS) throw err;
      console.warn(`nats harness: a port was taken (${err.message.split("\n")[0]}); starting again with fresh ports, attempt ${attempt + 1} of ${START_ATTEMPTS}`);
    }
  }
}

/**
 * An n-server JetStream cluster on 127.0.0.1. All servers start together (a lone
 * member never gets ready: JetStream needs a quorum to elect its meta leader);
 * resolves once every one is ready.
 */
export async function startNatsCluster(opts: StartNatsClusterOptions): Promise<NatsClusterHandle> {
  const size = opts.size ?? 3;
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`startNatsCluster: size must be a positive integer, got ${size}`);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
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
  const configFile = opts.configFile ?? (await writeConfig(root, opts.config));

  const start = async (attempt: number): Promise<void> => {
    servers.length = 0;
    // Route ports must be known up front: every member is given the full route list.
    const clusterPorts: number[] = [];
    for (let i = 0; i < size; i++) clusterPorts.push(await reservePort());
    const routes = clusterPorts.map((p) => `nats-route://127.0.0.1:${p}`);
    for (let i = 0; i < size; i++) {
      const name = `n${i + 1}`;
      const options: NatsServerOptions = {
        name,
        port: await reservePort(),
        monitorPort: await reservePort(),
        storeDir: join(root, `${attempt}`, name),
        cluster: { name: "camfleet-test", port: clusterPorts[i], routes, ...(opts.noAdvertise === true ? { noAdvertise: true } : {}) },
        readyTimeoutMs,
        ...(configFile !== undefined ? { configFile } : {}),
        ...(opts.env !== undefined ? { env: { ...process.env, ...opts.env } } : {}),
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
  };
  await withFreshPorts(start);
  // Ready means a meta leader, which takes two of three: wait for the full mesh
  // too, so every member knows (and tells clients) all the others.
  await waitForFullMesh(servers, Date.now() + readyTimeoutMs);
  return { urls: servers.map((s) => s.url), servers, close };
}

/** Every member has a route to every other one (`/routez` num_routes), or a ClusterNotFormedError at the deadline. */
async function waitForFullMesh(servers: NatsServerProcess[], deadline: number): Promise<void> {
  const want = servers.length - 1;
  for (;;) {
    const counts = await Promise.all(servers.map((s) => routeCount(s.monitorPort)));
    if (counts.every((n) => n === want)) return;
    if (Date.now() >= deadline) {
      const seen = servers.map((s, i) => `${s.name}: ${counts[i] ?? "no answer"}`).join(", ");
      throw new Error(`nats cluster: routes not fully formed by the deadline (want ${want} each; ${seen})`);
    }
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function routeCount(monitorPort: number): Promise<number | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/routez`, { signal: AbortSignal.timeout(1_000) });
    return ((await res.json()) as { num_routes?: number }).num_routes;
  } catch {
    return undefined;
  }
}

/** Writes the configuration text into the temp root; undefined when there is none. */
async function writeConfig(root: string, text: string | undefined): Promise<string | undefined> {
  if (text === undefined) return undefined;
  const path = join(root, "nats-server.conf");
  await writeFile(path, text);
  return path;
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}
