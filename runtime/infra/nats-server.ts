// One supervised nats-server child process: the embedded NATS of `camfleet node`
// (when NATS_URL is unset) and the real server behind every integration test.
//
// Everything binds to 127.0.0.1. With `--addr 127.0.0.1` the server also
// advertises only loopback client URLs (INFO connect_urls), so clients of a
// cluster never learn, and never reconnect to, a non-loopback address; the
// monitor follows --addr too.
//
// Orphans: where util-linux `setpriv` exists the server runs under
// `setpriv --pdeathsig KILL`, so the kernel kills it when this process dies in
// any way, kill -9 included. Without setpriv there is no such guard. The same
// holds for a normal exit: call stop() first for a clean JetStream shutdown.

import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { request } from "node:http";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { withTimeout } from "../deadline.ts";
import { describeExit, findExecutable, isExecutable, superviseSpawn, type ChildExit, type SupervisedChild } from "./child-process.ts";

export interface NatsClusterOptions {
  /** Cluster name (`--cluster_name`); the same on every member. */
  name: string;
  /** Route listen port on 127.0.0.1. 0 or omitted: the server picks one on the first start (kept for restarts). */
  port?: number;
  /**
   * Route URLs of the members, e.g. `nats-route://127.0.0.1:6222`. Listing this
   * server's own route is fine (the server skips itself), so every member can be
   * given the same list.
   */
  routes: string[];
  /**
   * Do not tell clients the other members' URLs (`--no_advertise`): a client
   * then knows only the URLs it was given and cannot roam to another member.
   */
  noAdvertise?: boolean;
}

export interface NatsServerOptions {
  /** `server_name`. Required, and unique within a cluster (JetStream clustering needs it). */
  name: string;
  /**
   * Client port on 127.0.0.1. 0 or omitted: the server binds a port of its own
   * choosing on the first start (read back from its ports file), kept for
   * restarts. Letting the server choose leaves no gap between picking a port
   * and binding it, in which another process could take it.
   */
  port?: number;
  /** HTTP monitoring port on 127.0.0.1, used for readiness (`/healthz`). 0 or omitted: as for `port`. */
  monitorPort?: number;
  /** JetStream store directory; created if missing. Kept across restarts, never deleted here. */
  storeDir: string;
  /**
   * A nats-server configuration file (`--config`) for what has no flag here:
   * `authorization`, `accounts`, `tls`, operator mode, JetStream store limits
   * (`jetstream { max_file_store: 2GB }`). The flags this class passes (name,
   * ports, store dir, cluster) override the same settings in it.
   */
  configFile?: string;
  /** Makes this server a member of a cluster. Omitted: a standalone server. */
  cluster?: NatsClusterOptions;
  /**
   * Milliseconds start() waits for the server to be ready before it gives up,
   * kills the process and rejects. Default 10000. In a cluster, ready means
   * JetStream has a meta leader, which needs a quorum of members running.
   */
  readyTimeoutMs?: number;
  /** Path of the nats-server binary. Default: `nats-server` on PATH, else /usr/sbin/nats-server. */
  binary?: string;
  /**
   * Environment of the child. Default: process.env. Keep the inherited variables:
   * the test suite finds leaked processes by a variable every child inherits.
   */
  env?: NodeJS.ProcessEnv;
  /** Called with each line the server writes to stderr (its log). */
  onLog?: (line: string) => void;
  /**
   * Called when the server exits without stop(), kill() or restart() asking it
   * to (a crash, or a signal from outside). Not called for a failed start():
   * start() rejects instead.
   */
  onExit?: (exit: NatsServerExit) => void;
}

export type NatsServerExit = ChildExit;

const MESSAGE_TAIL_LINES = 15;

/** start() failed: the server exited, never became ready, or could not be spawned. */
export class NatsServerStartError extends Error {
  override name = "NatsServerStartError";
  /** server_name of the server that failed. */
  readonly serverName: string;
  /** The last lines the server wrote to stderr; usually says why (e.g. "address already in use"). */
  readonly stderr: string;
  /** Exit code when the process exited on its own before it was ready. */
  readonly exitCode?: number | null;
  readonly signal?: NodeJS.Signals | null;
  /** The ports this start asked for; `undefined` where the server was to pick its own. */
  readonly ports: NatsServerPorts;
  /** The server said a port it was to bind is taken ("address already in use"). */
  readonly portInUse: boolean;

  constructor(
    serverName: string,
    reason: string,
    fields: { stderr: string; ports?: NatsServerPorts; exitCode?: number | null; signal?: NodeJS.Signals | null; cause?: unknown },
  ) {
    const ports = fields.ports ?? {};
    // The message carries the ports and the last lines (the fatal one is last); `stderr` has more.
    const tail = fields.stderr.trim().split("\n").slice(-MESSAGE_TAIL_LINES).join("\n");
    super(
      `nats-server "${serverName}" failed to start: ${reason} (${describePorts(ports)})` + (tail ? `\n--- stderr (tail) ---\n${tail}` : ""),
      fields.cause === undefined ? undefined : { cause: fields.cause },
    );
    this.serverName = serverName;
    this.stderr = fields.stderr;
    this.exitCode = fields.exitCode;
    this.signal = fields.signal;
    this.ports = ports;
    // nats-server's own words for EADDRINUSE, e.g. `listen tcp 127.0.0.1:4222: bind: address already in use`.
    this.portInUse = /address already in use/.test(fields.stderr);
  }
}

/** The three listeners of a server on 127.0.0.1. */
export interface NatsServerPorts {
  client?: number;
  monitor?: number;
  /** Routes; only for a cluster member. */
  cluster?: number;
}

function describePorts(ports: NatsServerPorts): string {
  const one = (what: string, port: number | undefined) => `${what} ${port === undefined ? "(server's choice)" : `127.0.0.1:${port}`}`;
  const parts = [one("client", ports.client), one("monitor", ports.monitor)];
  if ("cluster" in ports) parts.push(one("routes", ports.cluster));
  return `ports: ${parts.join(", ")}`;
}

/** No nats-server binary was found where we looked. */
export class NatsServerNotFoundError extends NatsServerStartError {
  override name = "NatsServerNotFoundError";
  /** Paths that were tried, in order. */
  readonly searched: string[];

  constructor(serverName: string, searched: string[]) {
    super(
      serverName,
      `no nats-server binary found (looked at ${searched.join(", ")}); ` +
        "install it (Debian: apt-get install nats-server) or pass the `binary` option",
      { stderr: "" },
    );
    this.searched = searched;
  }
}

const HOST = "127.0.0.1";
/** nats-server's RANDOM_PORT: bind any free port (the kernel's choice). */
const SERVER_PICKS = -1;
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
const READY_POLL_INTERVAL_MS = 50;
/** Bound on a single readiness probe, so one stuck request cannot eat the whole deadline. */
const PROBE_TIMEOUT_MS = 1_000;
/** Bound on waiting for stderr to drain after exit, so a start error carries the server's last words. */
const STDERR_DRAIN_MS = 1_000;
const STDERR_TAIL_LINES = 60;

type Running = SupervisedChild;

export class NatsServerProcess {
  readonly #opts: NatsServerOptions;
  readonly #storeDir: string;
  #port: number | undefined;
  #monitorPort: number | undefined;
  #clusterPort: number | undefined;
  #running: Running | undefined;
  /** Present while start() runs; stop()/kill() abort a start that has not spawned yet. */
  #startAbort: AbortController | undefined;
  #stderrLines: string[] = [];

  constructor(opts: NatsServerOptions) {
    if (!opts.name) throw new TypeError("NatsServerOptions.name is required");
    if (!opts.storeDir) throw new TypeError("NatsServerOptions.storeDir is required");
    this.#opts = opts;
    this.#storeDir = resolve(opts.storeDir);
    this.#port = opts.port || undefined;
    this.#monitorPort = opts.monitorPort || undefined;
    this.#clusterPort = opts.cluster?.port || undefined;
  }

  get name(): string {
    return this.#opts.name;
  }

  /** Client URL, `nats://127.0.0.1:PORT`. Known once start() has chosen the ports. */
  get url(): string {
    return `nats://${HOST}:${this.port}`;
  }

  get port(): number {
    return this.#known(this.#port, "port");
  }

  get monitorPort(): number {
    return this.#known(this.#monitorPort, "monitorPort");
  }

  /** Route port; undefined for a standalone server. */
  get clusterPort(): number | undefined {
    return this.#opts.cluster ? this.#known(this.#clusterPort, "clusterPort") : undefined;
  }

  /** Route URL other members use to reach this one. Undefined for a standalone server. */
  get routeUrl(): string | undefined {
    const port = this.clusterPort;
    return port === undefined ? undefined : `nats-route://${HOST}:${port}`;
  }

  get storeDir(): string {
    return this.#storeDir;
  }

  /** pid of the nats-server process while one is running (setpriv execs it, so it is the server itself). */
  get pid(): number | undefined {
    return this.#running?.child.pid;
  }

  get running(): boolean {
    return this.#running !== undefined;
  }

  /** The last lines of the server's log (stderr) of the current or most recent run. */
  stderrTail(): string {
    return this.#stderrLines.join("\n");
  }

  /**
   * Spawns the server and resolves once it is ready. On failure it rejects with
   * NatsServerStartError and no process is left behind.
   */
  async start(): Promise<void> {
    if (this.#running || this.#startAbort) throw new Error(`nats-server "${this.name}" is already started`);
    const abort = new AbortController();
    this.#startAbort = abort;
    try {
      await this.#start(abort.signal);
    } finally {
      this.#startAbort = undefined;
    }
  }

  /** SIGTERM (a clean JetStream shutdown), then SIGKILL after timeoutMs (default 10000). Resolves once it has exited. */
  async stop(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.#startAbort?.abort();
    const run = this.#running;
    if (!run) return;
    await run.terminate(opts.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
  }

  /** SIGKILL, like a crash or `kill -9`. Resolves once it has exited. */
  async kill(): Promise<void> {
    this.#startAbort?.abort();
    const run = this.#running;
    if (!run) return;
    await run.kill();
  }

  /** stop() if running, then start() again with the same ports and store dir. */
  async restart(opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.stop(opts);
    await this.start();
  }

  async #start(signal: AbortSignal): Promise<void> {
    const o = this.#opts;
    const binary = await resolveBinary(o.name, o.binary);
    await mkdir(this.#storeDir, { recursive: true });
    const asked = this.#ports();
    if (signal.aborted) {
      throw new NatsServerStartError(o.name, "stopped before it was spawned", { stderr: "", ports: asked });
    }
    // Where the server writes the ports it bound: read when it picked any itself.
    const portsDir = await mkdtemp(join(tmpdir(), "camfleet-nats-ports-"));
    try {
      this.#stderrLines = [];
      // Parent-death signal and an own process group: a Ctrl-C reaches only the
      // parent, which stops the server in order, after its clients have drained.
      const run = superviseSpawn(binary, this.#args(portsDir), { ...(o.env !== undefined ? { env: o.env } : {}), onStderrLine: (line) => this.#logLine(line) });
      this.#running = run;
      void run.exited.then((exit) => {
        if (this.#running === run) this.#running = undefined;
        if (!run.expected) this.#opts.onExit?.(exit);
      });

      const deadline = Date.now() + (o.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
      try {
        await this.#waitReady(run, portsDir, deadline);
      } catch (err) {
        await run.kill();
        await withTimeout(run.closed, STDERR_DRAIN_MS);
        // Ports the server chose in a start that failed are not kept: the next start lets it choose again.
        this.#port = asked.client;
        this.#monitorPort = asked.monitor;
        this.#clusterPort = asked.cluster;
        const fields = { stderr: this.stderrTail(), ports: asked };
        if (err instanceof NotReady) {
          // exitCode/signal only describe an exit of the server's own, not our SIGKILL.
          throw new NatsServerStartError(o.name, err.message, { ...fields, exitCode: err.exit?.code, signal: err.exit?.signal, cause: run.spawnError });
        }
        throw new NatsServerStartError(o.name, "unexpected error while waiting for readiness", { ...fields, cause: err });
      }
    } finally {
      await rm(portsDir, { recursive: true, force: true });
    }
  }

  /** The ports known now: given, or bound by an earlier start. */
  #ports(): NatsServerPorts {
    return { client: this.#port, monitor: this.#monitorPort, ...(this.#opts.cluster ? { cluster: this.#clusterPort } : {}) };
  }

  #args(portsDir: string): string[] {
    const o = this.#opts;
    const args = [
      ...(o.configFile !== undefined ? ["--config", o.configFile] : []),
      "--server_name", o.name,
      "--addr", HOST, // clients, the monitor (it follows --addr) and the advertised connect_urls
      "--port", String(this.#port ?? SERVER_PICKS),
      "--http_port", String(this.#monitorPort ?? SERVER_PICKS),
      "--ports_file_dir", portsDir,
      "--jetstream",
      "--store_dir", this.#storeDir,
    ];
    if (o.cluster) {
      args.push("--cluster_name", o.cluster.name, "--cluster", `nats://${HOST}:${this.#clusterPort ?? SERVER_PICKS}`);
      if (o.cluster.routes.length > 0) args.push("--routes", o.cluster.routes.join(","));
      if (o.cluster.noAdvertise === true) args.push("--no_advertise");
    }
    return args;
  }

  #logLine(line: string): void {
    this.#stderrLines.push(line);
    if (this.#stderrLines.length > STDERR_TAIL_LINES) this.#stderrLines.shift();
    this.#opts.onLog?.(line);
  }

  /**
   * Ready = the ports are known (given, or read from the ports file the server
   * writes once all its listeners are bound), /healthz answers 200 (JetStream
   * is up; in a cluster it has a meta leader), and the client port greets us
   * with an INFO naming this server. The last check matters for a given port:
   * the monitor starts before the client listener, so /healthz can be green
   * just before the server dies on a taken client port, and a port squatter
   * could answer /healthz for a server that failed.
   */
  async #waitReady(run: Running, portsDir: string, deadline: number): Promise<void> {
    let exit: NatsServerExit | undefined;
    void run.exited.then((e) => (exit = e));
    let lastProblem = "no answer yet";
    for (;;) {
      if (exit) {
        const why = run.spawnError ? `could not be spawned (${run.spawnError.message})` : `exited before it was ready (${describeExit(exit)})`;
        throw new NotReady(why, exit);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new NotReady(`not ready within ${this.#opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS} ms (${lastProblem})`);
      }
      if (!this.#portsKnown()) {
        const bound = await readPortsFile(portsDir, run.child.pid);
        if (bound) {
          this.#port ??= bound.client;
          this.#monitorPort ??= bound.monitor;
          if (this.#opts.cluster) this.#clusterPort ??= bound.cluster;
        }
        lastProblem = this.#portsKnown() ? "listeners bound" : "its listeners are not bound yet (no ports file)";
      } else {
        const probeMs = Math.min(left, PROBE_TIMEOUT_MS);
        const health = await probeHealthz(this.#monitorPort!, probeMs);
        if (health.ok) {
          const info = await probeInfo(this.#port!, probeMs);
          if (info.ok && info.serverName === this.name) {
            if (exit) continue; // it died while we probed: report the exit, not success
            return;
          }
          lastProblem = info.ok ? `client port answered as "${info.serverName}"` : `client port: ${info.problem}`;
        } else {
          lastProblem = `/healthz: ${health.problem}`;
        }
      }
      await withTimeout(run.exited, Math.min(READY_POLL_INTERVAL_MS, Math.max(0, deadline - Date.now())));
    }
  }

  #portsKnown(): boolean {
    const p = this.#ports();
    return p.client !== undefined && p.monitor !== undefined && (!("cluster" in p) || p.cluster !== undefined);
  }

  #known(value: number | undefined, what: string): number {
    if (value === undefined) throw new Error(`nats-server "${this.name}": ${what} is chosen by start(); call it first`);
    return value;
  }
}

class NotReady extends Error {
  constructor(
    message: string,
    readonly exit?: NatsServerExit,
  ) {
    super(message);
  }
}



/**
 * The ports file nats-server writes to `--ports_file_dir` once every listener
 * is bound, named `<executable>_<pid>.ports`:
 * `{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"],"cluster":[…]}`.
 * Undefined until it is there (setpriv execs the server, so the pid is its own).
 */
async function readPortsFile(dir: string, pid: number | undefined): Promise<NatsServerPorts | undefined> {
  if (pid === undefined) return undefined;
  const name = (await readdir(dir)).find((f) => f.endsWith(`_${pid}.ports`));
  if (name === undefined) return undefined;
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(await readFile(join(dir, name), "utf8")) as Record<string, unknown>;
  } catch {
    return undefined; // caught while being written: read it again on the next poll
  }
  const port = (key: string): number | undefined => {
    const urls = parsed[key];
    const first = Array.isArray(urls) ? urls[0] : undefined;
    return typeof first === "string" ? Number(new URL(first).port) || undefined : undefined;
  };
  return { client: port("nats"), monitor: port("monitoring"), cluster: port("cluster") };
}

type Probe<T> = ({ ok: true } & T) | { ok: false; problem: string };

function probeHealthz(port: number, timeoutMs: number): Promise<Probe<object>> {
  return new Promise((res) => {
    const req = request({ host: HOST, port, path: "/healthz", timeout: timeoutMs }, (resp) => {
      let body = "";
      resp.setEncoding("utf8");
      resp.on("data", (c: string) => (body += c));
      resp.on("end", () =>
        res(resp.statusCode === 200 ? { ok: true } : { ok: false, problem: `HTTP ${resp.statusCode} ${body.trim()}` }),
      );
      resp.on("error", (err) => res({ ok: false, problem: err.message }));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => res({ ok: false, problem: err.message }));
    req.end();
  });
}

/** Reads the INFO line a NATS server sends first on every client connection. */
function probeInfo(port: number, timeoutMs: number): Promise<Probe<{ serverName: string }>> {
  return new Promise((res) => {
    const sock = tcpConnect({ host: HOST, port });
    let buf = "";
    const done = (result: Probe<{ serverName: string }>) => {
      sock.destroy();
      res(result);
    };
    sock.setTimeout(timeoutMs, () => done({ ok: false, problem: `no INFO within ${timeoutMs} ms` }));
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      buf += chunk;
      const end = buf.indexOf("\r\n");
      if (end < 0) return;
      const line = buf.slice(0, end);
      if (!line.startsWith("INFO ")) return done({ ok: false, problem: "not a NATS server" });
      try {
        const info = JSON.parse(line.slice(5)) as { server_name?: unknown };
        done({ ok: true, serverName: String(info.server_name) });
      } catch (err) {
        done({ ok: false, problem: `bad INFO: ${(err as Error).message}` });
      }
    });
    sock.on("error", (err) => done({ ok: false, problem: err.message }));
    sock.on("end", () => done({ ok: false, problem: "closed before INFO" }));
  });
}

async function resolveBinary(serverName: string, explicit: string | undefined): Promise<string> {
  if (explicit) {
    const found = explicit.includes("/") ? ((await isExecutable(explicit)) ? explicit : undefined) : await findExecutable(explicit, []);
    if (found) return found;
    throw new NatsServerNotFoundError(serverName, [explicit]);
  }
  const fallback = "/usr/sbin/nats-server";
  const found = await findExecutable("nats-server", [fallback]);
  if (found) return found;
  throw new NatsServerNotFoundError(serverName, ["nats-server on PATH", fallback]);
}
