// The real-NATS process layer (runtime/nats-server.ts) and the test harness on top of it.

import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, onTestFinished, test, vi } from "vitest";
import {
  NatsServerNotFoundError,
  NatsServerProcess,
  NatsServerStartError,
} from "../runtime/infra/nats-server.ts";
import { startNats, startNatsCluster, withFreshPorts } from "./helpers/nats-harness.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";

const LOOPBACK_HOSTPORT = /^127\.0\.0\.1:\d+$/;

/** Gone = no such process, or a zombie its parent has not reaped yet. */
function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return true;
    throw err;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** Live pids whose command line contains `arg` (e.g. a unique store dir). */
function livePidsWithArg(arg: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(arg) && !processGone(pid)) pids.push(pid);
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

async function connectTo(servers: string | string[]): Promise<NatsConnection> {
  // A short reconnect wait keeps the kill/restart tests quick; the default is 2 s.
  const nc = await connect({ servers, name: "nats-harness-test", reconnectTimeWait: 250 });
  onTestFinished(async () => {
    await nc.close();
  });
  return nc;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-nats-test-"));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function listenSquatter(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer((sock) => sock.on("error", () => {}));
    srv.once("error", reject);
    srv.listen(port, "127.0.0.1", () => resolve(srv));
  });
}

function getJson(port: number, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, timeout: 2_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => {
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on("error", reject);
    req.end();
  });
}

function expectLoopbackOnly(nc: NatsConnection): void {
  for (const url of nc.info?.connect_urls ?? []) expect(url).toMatch(LOOPBACK_HOSTPORT);
  for (const s of nc.getServers()) expect(s.hostname).toBe("127.0.0.1");
}

describe("single server", () => {
  test("KV put/get, kill -9 and restart keep the data, stop() leaves no process", async () => {
    const t0 = performance.now();
    const nats = await startNats({ onCleanup: onTestFinished });
    console.info(`single server ready in ${Math.round(performance.now() - t0)} ms`);
    expect(nats.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);

    const nc = await connectTo(nats.url);
    const kv = await new Kvm(jetstream(nc)).create("harness_single");
    await kv.put("cam-1", "hello");
    expect((await kv.get("cam-1"))?.string()).toBe("hello");

    const firstPid = nats.server.pid!;
    const port = nats.server.port;
    await nats.server.kill();
    expect(processGone(firstPid)).toBe(true);
    expect(nats.server.running).toBe(false);

    await nats.server.restart();
    expect(nats.server.port).toBe(port);
    expect(nats.server.pid).not.toBe(firstPid);
    // The client reconnects by itself to the same address; the store dir survived kill -9.
    const kv2 = await waitFor(() => new Kvm(jetstream(nc, { timeout: 1_000 })).open("harness_single"), {
      timeoutMs: 10_000,
      message: "KV bucket reachable after restart",
    });
    const entry = await waitFor(() => kv2.get("cam-1"), { timeoutMs: 10_000, message: "KV get after restart" });
    expect(entry.string()).toBe("hello");

    const pid = nats.server.pid!;
    await nats.close();
    expect(processGone(pid)).toBe(true);
    expect(nats.server.pid).toBeUndefined();
  });

  test("a taken client port rejects start() with the server's stderr and leaves no process", async () => {
    const dir = await tempDir();
    const port = await reservePort();
    const squatter = await listenSquatter(port);
    onTestFinished(() => new Promise<void>((res) => squatter.close(() => res())));
    const storeDir = join(dir, "store");
    const server = new NatsServerProcess({ name: "taken", port, storeDir, readyTimeoutMs: 10_000 });
    onTestFinished(() => server.kill());

    const err = await server.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NatsServerStartError);
    const startErr = err as NatsServerStartError;
    expect(startErr.exitCode).toBe(1);
    expect(startErr.stderr).toContain(`127.0.0.1:${port}`);
    // It says which ports it tried, and that one was taken.
    expect(startErr.ports.client).toBe(port);
    expect(startErr.message).toContain(`client 127.0.0.1:${port}`);
    expect(startErr.portInUse).toBe(true);
    expect(startErr.message).toContain(startErr.stderr.trim().split("\n").at(-1));
    expect(server.running).toBe(false);
    expect(livePidsWithArg(storeDir)).toEqual([]);
  });

  test("a server given no ports binds its own, reports them, and keeps them across a restart", async () => {
    const dir = await tempDir();
    const server = new NatsServerProcess({ name: "picks", storeDir: join(dir, "store") });
    onTestFinished(() => server.kill());
    await server.start();
    const { port, monitorPort } = server;
    expect(port).toBeGreaterThan(0);
    expect(monitorPort).toBeGreaterThan(0);
    expect(((await getJson(monitorPort, "/varz")) as { port?: number }).port).toBe(port);
    await server.kill();
    await server.restart();
    expect([server.port, server.monitorPort]).toEqual([port, monitorPort]);
    const nc = await connectTo(server.url);
    expect(nc.info?.server_name).toBe("picks");
  });

  test("the harness starts again with fresh ports when one is taken, and says so", async () => {
    const dir = await tempDir();
    const taken = await reservePort();
    const squatter = await listenSquatter(taken);
    onTestFinished(() => new Promise<void>((res) => squatter.close(() => res())));
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    onTestFinished(() => warn.mockRestore());
    const ports: number[] = [];
    const server = await withFreshPorts(async (attempt) => {
      const port = attempt === 1 ? taken : await reservePort();
      ports.push(port);
      const s = new NatsServerProcess({ name: `retry-${attempt}`, port, storeDir: join(dir, `store-${attempt}`) });
      onTestFinished(() => s.kill());
      await s.start();
      return s;
    });
    expect(ports).toHaveLength(2);
    expect(ports[0]).toBe(taken);
    expect(server.port).toBe(ports[1]);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]?.[0])).toMatch(new RegExp(`port was taken .*127\\.0\\.0\\.1:${taken}.*attempt 2 of 3`));

    // Any other failure is not retried.
    let calls = 0;
    const missing = withFreshPorts(async () => {
      calls++;
      await new NatsServerProcess({ name: "x", storeDir: join(dir, "store-x"), binary: join(dir, "no-such-nats-server") }).start();
    });
    await expect(missing).rejects.toBeInstanceOf(NatsServerNotFoundError);
    expect(calls).toBe(1);
  });

  test("a server that never gets ready is killed at the deadline", async () => {
    const dir = await tempDir();
    const storeDir = join(dir, "store");
    // A lone cluster member never gets a JetStream meta leader, so /healthz stays 503.
    const server = new NatsServerProcess({
      name: "lonely",
      storeDir,
      cluster: { name: "nobody-else", routes: [`nats-route://127.0.0.1:${await reservePort()}`] },
      readyTimeoutMs: 1_500,
    });
    onTestFinished(() => server.kill());

    const t0 = performance.now();
    const err = await server.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    const elapsed = performance.now() - t0;
    expect(err).toBeInstanceOf(NatsServerStartError);
    expect((err as NatsServerStartError).exitCode).toBeUndefined();
    expect((err as NatsServerStartError).stderr).not.toBe("");
    // The deadline, plus the kill and up to 1 s of stderr drain on a loaded machine; without the deadline it would wait for ever.
    expect(elapsed).toBeLessThan(1_500 + 5_000);
    expect(livePidsWithArg(storeDir)).toEqual([]);
  });

  test("a missing binary is a NatsServerNotFoundError", async () => {
    const dir = await tempDir();
    const server = new NatsServerProcess({ name: "x", storeDir: join(dir, "store"), binary: join(dir, "no-such-nats-server") });
    onTestFinished(() => server.kill());
    await expect(server.start()).rejects.toBeInstanceOf(NatsServerNotFoundError);
  });
});

describe("cluster", () => {
  test("R3 KV survives kill -9 of its leader; clients only ever see 127.0.0.1", async () => {
    const t0 = performance.now();
    const cluster = await startNatsCluster({ onCleanup: onTestFinished });
    console.info(`3-node cluster ready in ${Math.round(performance.now() - t0)} ms`);
    expect(cluster.urls).toHaveLength(3);

    for (const s of cluster.servers) {
      const varz = (await getJson(s.monitorPort, "/varz")) as { connect_urls?: string[] };
      expect(varz.connect_urls?.length).toBe(3);
      for (const u of varz.connect_urls ?? []) expect(u).toMatch(LOOPBACK_HOSTPORT);
    }

    const nc = await connectTo(cluster.urls);
    expectLoopbackOnly(nc);
    const js = jetstream(nc, { timeout: 1_000 });
    const kv = await new Kvm(js).create("harness_r3", { replicas: 3 });
    await kv.put("cam-1", "v1");

    const jsm = await jetstreamManager(nc);
    const leaderName = (await jsm.streams.info("KV_harness_r3")).cluster?.leader;
    const leader = cluster.servers.find((s) => s.name === leaderName);
    expect(leader, `stream leader ${leaderName}`).toBeDefined();
    const leaderPid = leader!.pid!;

    const connectedTo = nc.info?.server_name;
    const killedAt = performance.now();
    await leader!.kill();
    expect(processGone(leaderPid)).toBe(true);
    // Until a new stream leader is elected, puts time out or find no responders.
    await waitFor(() => kv.put("cam-1", "v2"), { timeoutMs: 30_000, intervalMs: 100, message: "KV put after leader kill -9" });
    console.info(
      `KV writable again ${Math.round(performance.now() - killedAt)} ms after kill -9 of the stream leader ` +
        `(${leaderName}; the client was connected to ${connectedTo})`,
    );
    // KV buckets get allow_direct on 2.9, so any replica answers get(): a lagging
    // follower can return the previous value for a moment after a write is acked.
    await waitFor(async () => (await kv.get("cam-1"))?.string() === "v2", { message: "v2 visible to get()" });

    const restartAt = performance.now();
    await leader!.restart();
    console.info(`killed server ready again in ${Math.round(performance.now() - restartAt)} ms`);

    // The restarted server catches up and serves the bucket to its own clients.
    const nc2 = await connectTo(leader!.url);
    // Ready (/healthz) does not wait for the bucket's own catch-up: until then a request may time out.
    const kvOnRestarted = await waitFor(() => new Kvm(jetstream(nc2, { timeout: 1_000 })).open("harness_r3"), { timeoutMs: 15_000, message: "bucket open on the restarted server" });
    await waitFor(() => kvOnRestarted.put("cam-1", "v3"), { timeoutMs: 15_000, message: "KV put through the restarted server" });
    await waitFor(async () => (await kv.get("cam-1"))?.string() === "v3", { message: "v3 visible to get()" });

    for (const c of [nc, nc2]) {
      await c.flush();
      expectLoopbackOnly(c);
    }
    expect(nc2.info?.connect_urls?.length).toBe(3);

    const pids = cluster.servers.map((s) => s.pid!);
    await cluster.close();
    for (const pid of pids) expect(processGone(pid)).toBe(true);
  });
});

describe("orphan protection", () => {
  test("kill -9 of the parent process takes its nats-server down with it", async () => {
    const dir = await tempDir();
    const moduleUrl = pathToFileURL(join(import.meta.dirname, "..", "runtime", "index.ts")).href;
    const script = `
      const { NatsServerProcess } = await import(${JSON.stringify(moduleUrl)});
      const server = new NatsServerProcess({ name: "orphan-check", storeDir: ${JSON.stringify(join(dir, "store"))} });
      await server.start();
      console.log(JSON.stringify({ pid: server.pid }));
      setInterval(() => {}, 1 << 30); // stay alive until killed
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let serverPid: number | undefined;
    onTestFinished(() => {
      // Only if an assert failed before the kill below: do not leave either process.
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      if (serverPid !== undefined && !processGone(serverPid)) process.kill(serverPid, "SIGKILL");
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const exited = new Promise<void>((res) => child.once("exit", () => res()));

    let deadline: NodeJS.Timeout | undefined;
    const firstLine = await Promise.race([
      new Promise<string>((res) => createInterface({ input: child.stdout }).once("line", res)),
      exited.then(() => Promise.reject(new Error(`child exited before printing the server pid: ${stderr}`))),
      new Promise<never>((_, rej) => {
        deadline = setTimeout(() => rej(new Error(`no server pid within 15 s: ${stderr}`)), 15_000);
      }),
    ]).finally(() => clearTimeout(deadline));
    serverPid = (JSON.parse(firstLine) as { pid: number }).pid;
    expect(processGone(serverPid)).toBe(false);
    expect(readFileSync(`/proc/${serverPid}/cmdline`, "utf8")).toContain("nats-server");

    child.kill("SIGKILL");
    await exited;
    const pid = serverPid;
    await waitFor(() => processGone(pid), { timeoutMs: 5_000, message: `nats-server ${pid} gone after its parent was killed` });
  });
});
