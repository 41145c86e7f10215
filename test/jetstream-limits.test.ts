// JetStream resources that fit the server (issue #18): real nats-servers with
// a limited store (`max_file_store` in a conf file), real `camfleet node` and
// `camfleet streams apply` processes, an in-process gateway.

import { jetstreamManager, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import { Writable } from "node:stream";
import { describe, expect, it, onTestFinished } from "vitest";
import { createLogger, JetStreamStorageError, LOG_MESSAGES, type Logger } from "../runtime/index.ts";
import { BUCKETS, STREAMS } from "../subjects/index.ts";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { connectTestClient, startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats, type NatsHandle } from "./helpers/nats-harness.ts";

const MiB = 1024 ** 2;
const EX_CONFIG = 78;

/** A server whose JetStream file store is limited, as on a small box. */
function startSmallServer(maxFileStore: string): Promise<NatsHandle> {
  return startNats({ onCleanup: onTestFinished, config: `jetstream { max_file_store: ${maxFileStore} }\n` });
}

async function manager(nats: NatsHandle): Promise<JetStreamManager> {
  return jetstreamManager(await connectTestClient([nats.url], onTestFinished));
}

async function streamConfig(jsm: JetStreamManager, name: string): Promise<StreamConfig> {
  return (await jsm.streams.info(name)).config;
}

async function streamNames(jsm: JetStreamManager): Promise<string[]> {
  const names: string[] = [];
  for await (const name of jsm.streams.names()) names.push(name);
  return names.sort();
}

/** The server's own view of its store (the monitoring port, which camfleet never uses). */
async function jsz(nats: NatsHandle): Promise<{ config: { max_storage: number }; reserved_storage: number }> {
  const res = await fetch(`http://127.0.0.1:${nats.server.monitorPort}/jsz`);
  return (await res.json()) as { config: { max_storage: number }; reserved_storage: number };
}

/** A logger whose JSON lines land in `lines`. */
function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString("utf8").split("\n")) if (text !== "") lines.push(JSON.parse(text) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ node: "gw-test", level: "info", destination }), lines };
}

/** Runs a camfleet command to its end; stdout lines as text, stderr lines. */
async function runToEnd(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string[]; stderr: string[]; proc: CamfleetProcess }> {
  const proc = runCamfleet(args, { env, onCleanup: onTestFinished });
  const { code } = await proc.exited;
  const stdout = proc.lines.map((l) => (typeof l.raw === "string" ? l.raw : JSON.stringify(l)));
  return { code, stdout, stderr: proc.stderr().split("\n").filter((l) => l !== ""), proc };
}

const ALL_STREAMS = [STREAMS.detections, STREAMS.status, ...Object.values(BUCKETS).map((b) => `KV_${b}`)].sort();

describe("JetStream limits that fit the server", () => {
  it("a 2 GiB store: a node, then a gateway, start with no variable set; the streams take half the room (204 MiB + 819 MiB) and no probe is left", async () => {
    const nats = await startSmallServer("2GB");
    expect((await jsz(nats)).config.max_storage).toBe(2 * 1024 * MiB);
    const node = await startFleetNode({ id: "n1", natsUrls: [nats.url], onCleanup: onTestFinished });
    const jsm = await manager(nats);
    expect((await streamConfig(jsm, STREAMS.status)).max_bytes).toBe(204 * MiB);
    expect((await streamConfig(jsm, STREAMS.detections)).max_bytes).toBe(819 * MiB);
    expect(await streamNames(jsm)).toEqual(ALL_STREAMS);
    // Room for others: the streams reserved less than half the store (KV buckets, without a size, reserve nothing).
    expect((await jsz(nats)).reserved_storage).toBe((204 + 819) * MiB);

    const before = await Promise.all([streamConfig(jsm, STREAMS.status), streamConfig(jsm, STREAMS.detections)]);
    const { logger, lines } = capturingLogger();
    await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished, logger });
    expect(await Promise.all([streamConfig(jsm, STREAMS.status), streamConfig(jsm, STREAMS.detections)])).toEqual(before);
    expect(lines.filter((l) => l.msg === LOG_MESSAGES.streamSettingsDiffer)).toEqual([]);
    expect(node.alive()).toBe(true);
  });

  // Chosen for a small server: defaults start, sized down to half the room,
  // as long as each stream gets at least 1 MiB; below that (a store of less
  // than 10 MiB) the node fails with one line saying what to do.
  it("a 256 MiB store: a node starts with the sizes adapted (25 MiB + 102 MiB); a 4 MiB store fails with one line, creating nothing", async () => {
    const nats = await startSmallServer("256MB");
    await startFleetNode({ id: "n1", natsUrls: [nats.url], onCleanup: onTestFinished });
    const jsm = await manager(nats);
    expect((await streamConfig(jsm, STREAMS.status)).max_bytes).toBe(25 * MiB);
    expect((await streamConfig(jsm, STREAMS.detections)).max_bytes).toBe(102 * MiB);
    expect(await streamNames(jsm)).toEqual(ALL_STREAMS);

    const tiny = await startSmallServer("4MB");
    const { code, stderr } = await runToEnd(["node"], { NATS_URL: tiny.url, NODE_ID: "n2", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim" });
    expect(code).toBe(EX_CONFIG);
    expect(stderr).toContain(
      "camfleet node: the default sizes of camfleet's streams do not fit: the JetStream store has 4 MiB free (they need at least 10 MiB); " +
        "give JetStream more room (max_file_store) or set CAMFLEET_STATUS_MAX_BYTES and CAMFLEET_DETECTIONS_MAX_BYTES",
    );
    expect(await streamNames(await manager(tiny))).toEqual([]);
  });

  it("a configured size that does not fit: one line naming the variable, the size and the room, from a node and from a gateway; nothing is created", async () => {
    const nats = await startSmallServer("2GB");
    const env = { NATS_URL: nats.url, NODE_ID: "n1", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", CAMFLEET_DETECTIONS_MAX_BYTES: String(4 * 1024 * MiB) };
    const { code, stderr } = await runToEnd(["node"], env);
    expect(code).toBe(EX_CONFIG);
    expect(stderr).toContain("camfleet node: CAMFLEET_DETECTIONS_MAX_BYTES=4294967296 does not fit: the JetStream store has 2 GiB free");
    const jsm = await manager(nats);
    expect(await streamNames(jsm)).toEqual([]);

    const started = startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished, env: { CAMFLEET_DETECTIONS_MAX_BYTES: String(4 * 1024 * MiB) } });
    await expect(started).rejects.toThrow(JetStreamStorageError);
    await expect(started).rejects.toThrow(/^CAMFLEET_DETECTIONS_MAX_BYTES=4294967296 does not fit: the JetStream store has 2 GiB free$/);
    expect(await streamNames(jsm)).toEqual([]);
  });

  it("a gateway with other settings, started after a node, leaves the stream as it is and logs the difference once; `camfleet streams apply` changes it, `--dry-run` only shows it", async () => {
    const nats = await startSmallServer("2GB");
    await startFleetNode({ id: "n1", natsUrls: [nats.url], onCleanup: onTestFinished });
    const jsm = await manager(nats);
    const before = await streamConfig(jsm, STREAMS.detections);
    expect([before.max_bytes, before.max_age]).toEqual([819 * MiB, 7 * 86_400 * 1e9]);

    const settings = { CAMFLEET_DETECTIONS_MAX_BYTES: String(64 * MiB), CAMFLEET_DETECTIONS_MAX_AGE_S: "3600" };
    const { logger, lines } = capturingLogger();
    await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished, logger, env: settings });
    expect(await streamConfig(jsm, STREAMS.detections)).toEqual(before);
    const warnings = lines.filter((l) => l.msg === LOG_MESSAGES.streamSettingsDiffer);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      level: "warn",
      stream: STREAMS.detections,
      differences: "max_bytes 819 MiB → 64 MiB (CAMFLEET_DETECTIONS_MAX_BYTES), max_age 7d → 1h (CAMFLEET_DETECTIONS_MAX_AGE_S)",
    });

    const dry = await runToEnd(["streams", "apply", "--dry-run"], { NATS_URL: nats.url, ...settings });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toEqual([
      "CAMFLEET_STATUS: unchanged",
      "CAMFLEET_DETECTIONS: would change: max_bytes 819 MiB → 64 MiB (CAMFLEET_DETECTIONS_MAX_BYTES), max_age 7d → 1h (CAMFLEET_DETECTIONS_MAX_AGE_S)",
      "(dry run: nothing changed)",
    ]);
    expect(await streamConfig(jsm, STREAMS.detections)).toEqual(before);

    const applied = await runToEnd(["streams", "apply"], { NATS_URL: nats.url, ...settings });
    expect(applied.code).toBe(0);
    expect(applied.stdout).toEqual([
      "CAMFLEET_STATUS: unchanged",
      "CAMFLEET_DETECTIONS: changed: max_bytes 819 MiB → 64 MiB (CAMFLEET_DETECTIONS_MAX_BYTES), max_age 7d → 1h (CAMFLEET_DETECTIONS_MAX_AGE_S)",
    ]);
    const after = await streamConfig(jsm, STREAMS.detections);
    expect([after.max_bytes, after.max_age]).toEqual([64 * MiB, 3600 * 1e9]);
    expect((await streamConfig(jsm, STREAMS.status)).max_bytes).toBe(204 * MiB);

    // Too large for what is left: one line, and the stream stays as it is. The
    // room for it: 2048 MiB − 204 MiB (status) − 64 MiB (itself) leaves 1780 MiB,
    // plus the 64 MiB it holds already: 1844 MiB, shown rounded down.
    const tooLarge = await runToEnd(["streams", "apply"], { NATS_URL: nats.url, CAMFLEET_DETECTIONS_MAX_BYTES: String(4 * 1024 * MiB) });
    expect(tooLarge.code).toBe(EX_CONFIG);
    expect(tooLarge.stderr).toEqual(["camfleet: CAMFLEET_DETECTIONS_MAX_BYTES=4294967296 does not fit: the JetStream store has 1.8 GiB free"]);
    expect((await streamConfig(jsm, STREAMS.detections)).max_bytes).toBe(64 * MiB);
    expect(await streamNames(jsm)).toEqual(ALL_STREAMS);
  });
});
