import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { BUCKETS, STREAMS } from "../subjects/index.ts";
import { isAlive, runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";
import { LOG_MESSAGES } from "../runtime/index.ts";

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-node-"));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Starts `camfleet node` with an embedded NATS on free ports; returns it once ready. */
async function startEmbeddedNode(extraEnv: Record<string, string> = {}) {
  const dataDir = await tempDir();
  const proc = runCamfleet(["node"], {
    env: { NODE_ID: "n1", HTTP_PORT: "0", CAMFLEET_NATS_PORT: "0", CAMFLEET_DATA_DIR: dataDir, ...extraEnv },
    onCleanup: onTestFinished,
  });
  const embedded = await proc.waitForLog((l) => l.msg === LOG_MESSAGES.embeddedNatsReady);
  const ops = await proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps);
  await proc.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
  return { proc, natsUrl: embedded.url as string, natsPid: embedded.pid as number, opsUrl: ops.url as string, dataDir };
}

function logCount(proc: CamfleetProcess, msg: string): number {
  return proc.lines.filter((l) => l.msg === msg).length;
}

describe("camfleet node with an embedded NATS", () => {
  it("starts nats-server, creates the streams and buckets, serves ops, and stops everything on SIGTERM", async () => {
    const { proc, natsUrl, natsPid, opsUrl } = await startEmbeddedNode();
    expect(isAlive(natsPid)).toBe(true);
    expect(natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);

    const nc = await connect({ servers: natsUrl });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const status = await jsm.streams.info(STREAMS.status);
    expect(status.config.subjects).toEqual(["camfleet.status.>"]);
    expect((await jsm.streams.info(STREAMS.detections)).config.subjects).toEqual(["camfleet.det.>"]);
    const kvm = new Kvm(nc);
    for (const bucket of Object.values(BUCKETS)) {
      const kv = await kvm.open(bucket);
      expect((await kv.status()).bucket).toBe(bucket);
    }
    await nc.close();

    expect((await fetch(`${opsUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${opsUrl}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${opsUrl}/metrics`)).text();
    expect(metrics).toMatch(/^camfleet_node_capacity\{node="n1"\} 32$/m);
    expect(metrics).toMatch(/^camfleet_nats_connected\{node="n1"\} 1$/m);

    const exit = await proc.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(isAlive(natsPid)).toBe(false);
    // A clean stop is not reported as a crash of the embedded server.
    expect(logCount(proc, "embedded nats-server exited unexpectedly")).toBe(0);
    expect(logCount(proc, "node stopped")).toBe(1);
  });

  it("keeps its data across restarts of the node", async () => {
    const first = await startEmbeddedNode();
    const nc = await connect({ servers: first.natsUrl });
    const kv = await new Kvm(nc).open(BUCKETS.cameras);
    await kv.put("cam1", JSON.stringify({ id: "cam1", url: "rtsp://h/s" }));
    await nc.close();
    await first.proc.stop();

    const second = await startEmbeddedNode({ CAMFLEET_DATA_DIR: first.dataDir });
    const nc2 = await connect({ servers: second.natsUrl });
    onTestFinished(() => nc2.close());
    const entry = await (await new Kvm(nc2).open(BUCKETS.cameras)).get("cam1");
    expect(entry?.string()).toContain("rtsp://h/s");
  });

  it("leaves no nats-server behind when the node is killed with SIGKILL", async () => {
    const { proc, natsPid } = await startEmbeddedNode();
    proc.child.kill("SIGKILL");
    await proc.exited;
    await waitFor(() => !isAlive(natsPid), { timeoutMs: 5_000, message: `embedded nats-server ${natsPid} to die with its parent` });
  });

  it("fails with a clear message when the embedded port is taken", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const port = (blocker.address() as { port: number }).port;
    const dataDir = await tempDir();
    const proc = runCamfleet(["node"], {
      env: { HTTP_PORT: "0", CAMFLEET_NATS_PORT: String(port), CAMFLEET_DATA_DIR: dataDir },
      onCleanup: onTestFinished,
    });
    const exit = await proc.exited;
    expect(exit.code).toBe(1);
    expect(proc.stderr()).toContain(`127.0.0.1:${port} is already in use`);
    expect(proc.stderr()).toContain("NATS_URL");
  });
});

describe("camfleet node with NATS_URL", () => {
  it("connects, and logs one line per change of connection state across a server restart", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const proc = runCamfleet(["node"], { env: { NODE_ID: "n2", HTTP_PORT: "0", NATS_URL: nats.url }, onCleanup: onTestFinished });
    await proc.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    expect(logCount(proc, LOG_MESSAGES.embeddedNatsReady)).toBe(0);

    await nats.server.stop();
    await proc.waitForLog((l) => l.msg === LOG_MESSAGES.disconnectedFromNats);
    await nats.server.start();
    await proc.waitForLog((l) => l.msg === LOG_MESSAGES.reconnectedToNats, 20_000);
    expect(logCount(proc, LOG_MESSAGES.disconnectedFromNats)).toBe(1);
    expect(logCount(proc, LOG_MESSAGES.reconnectedToNats)).toBe(1);

    expect((await proc.stop()).code).toBe(0);
  });

  it("waits for a server that is not up yet, and serves /readyz 503 meanwhile", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    await nats.server.stop();
    const proc = runCamfleet(["node"], { env: { NODE_ID: "n3", HTTP_PORT: "0", NATS_URL: nats.url }, onCleanup: onTestFinished });
    const ops = await proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps);
    await proc.waitForLog((l) => l.msg === LOG_MESSAGES.natsNotReachableYet);
    const notReady = await fetch(`${ops.url as string}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ status: "not ready", reason: "connecting to NATS" });

    await nats.server.start();
    await proc.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady, 20_000);
    expect((await fetch(`${ops.url as string}/readyz`)).status).toBe(200);
    expect((await proc.stop()).code).toBe(0);
  });
});

describe("camfleet command line", () => {
  it("camera add, ls, status, stop, rm and nodes drive a running node", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const node = runCamfleet(["node"], { env: { NODE_ID: "cli1", HTTP_PORT: "0", NATS_URL: nats.url, CAMFLEET_ACTOR_KIND: "sim" }, onCleanup: onTestFinished });
    await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    const cli = async (...args: string[]) => {
      const p = runCamfleet(args, { env: { NATS_URL: nats.url }, onCleanup: onTestFinished });
      const { code } = await p.exited;
      return { code, out: p.lines.map((l) => (l.raw !== undefined ? l.raw : JSON.stringify(l))).join("\n"), err: p.stderr() };
    };

    expect(await cli("camera", "add", "door", "rtsp://admin:pw@10.0.0.9/live", "--site", "hq")).toMatchObject({
      code: 0,
      out: "camera door saved (enabled): rtsp://***@10.0.0.9/live",
    });
    const bad = await cli("camera", "add", "bad.id", "rtsp://h/s");
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^camfleet: INVALID_ARGUMENT: .*id:/);
    const ai = await cli("camera", "add", "yard", "rtsp://h/s", "--ai", "--ai-fps", "2", "--solutions", "motion", "--transcode", "--disabled", "--json");
    expect(JSON.parse(ai.out)).toMatchObject({ id: "yard", enabled: false, transcode: true, solutions: ["motion"], ai: { enabled: true, max_fps: 2 } });
    const badFps = await cli("camera", "add", "yard", "rtsp://h/s", "--ai-fps", "lots");
    expect(badFps.code).toBe(1);
    expect(badFps.err).toMatch(/^camfleet: INVALID_ARGUMENT: .*ai\.max_fps/);
    expect(await cli("camera", "rm", "yard")).toMatchObject({ code: 0 });

    await waitFor(async () => (await cli("camera", "ls")).out.includes("door  true     cli1   STREAMING"), { timeoutMs: 10_000, message: "door listed as STREAMING on cli1" });
    const status = await cli("camera", "status", "door", "--json");
    expect(JSON.parse(status.out)).toMatchObject({ camera: "door", node: "cli1", state: "STREAMING" });
    const nodes = await cli("nodes", "--json");
    expect(JSON.parse(nodes.out)).toMatchObject([{ node: "cli1", cameras: 1 }]);

    expect((await cli("camera", "stop", "door")).out).toBe("camera door disabled");
    await waitFor(async () => (await cli("camera", "status", "door")).err.includes("NOT_FOUND: camera door is not running on any node"), {
      timeoutMs: 10_000,
      message: "door stopped",
    });
    expect(await cli("camera", "rm", "door")).toMatchObject({ code: 0, out: "camera door deleted" });
    expect((await cli("camera", "rm", "door")).err).toContain("NOT_FOUND");
  });

  it("a client command without a reachable NATS says so and exits 1", async () => {
    const proc = runCamfleet(["nodes"], { env: { NATS_URL: "nats://127.0.0.1:1" }, onCleanup: onTestFinished });
    expect((await proc.exited).code).toBe(1);
    expect(proc.stderr()).toContain("cannot reach NATS at nats://127.0.0.1:1");
  });

  it("--help lists the commands of the contract (docs/contract.md)", async () => {
    const proc = runCamfleet(["--help"], { onCleanup: onTestFinished });
    expect((await proc.exited).code).toBe(0);
    const help = proc.lines.map((l) => l.raw).join("\n");
    for (const cmd of ["up", "node", "gateway", "detector", "camera", "nodes", "events"]) {
      expect(help).toMatch(new RegExp(`^  ${cmd}\\b`, "m"));
    }
  });

  it("refuses bad configuration with one line per variable, exit 78, and starts nothing", async () => {
    const proc = runCamfleet(["node"], { env: { MAX_CAMERAS: "lots", NATS_URL: "nats://u:hunter2@", LOG_LEVEL: "info" }, onCleanup: onTestFinished });
    expect((await proc.exited).code).toBe(78);
    const lines = proc.stderr().trim().split("\n");
    expect(lines).toEqual([
      expect.stringMatching(/^camfleet: invalid configuration: NATS_URL must be/),
      'camfleet: invalid configuration: MAX_CAMERAS must be a whole number from 1 to 10000 (got "lots")',
    ]);
    expect(proc.stderr()).not.toContain("hunter2");
  });

  it("an unknown command is a usage error", async () => {
    const proc = runCamfleet(["fly"], { onCleanup: onTestFinished });
    expect((await proc.exited).code).toBe(2);
    expect(proc.stderr()).toContain("unknown command 'fly'");
  });
});
