import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { Writable } from "node:stream";
import { createLogger, LOG_MESSAGES } from "../runtime/index.ts";
import { applyStreams, defaultReplicas, ensureJetStream } from "../runtime/infra/jetstream-setup.ts";
import { BUCKETS, STREAMS, subjects } from "../subjects/index.ts";
import { startNats, startNatsCluster } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

const ALL_STREAMS = [STREAMS.status, STREAMS.detections, ...Object.values(BUCKETS).map((b) => `KV_${b}`)];

describe("JetStream set-up", () => {
  it("one replica on a single server; running it again changes nothing", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    expect(defaultReplicas(nc)).toBe(1);
    await ensureJetStream(nc);
    await ensureJetStream(nc);
    const jsm = await jetstreamManager(nc);
    for (const name of ALL_STREAMS) expect((await jsm.streams.info(name)).config.num_replicas).toBe(1);
    expect((await jsm.streams.info(STREAMS.detections)).config.duplicate_window).toBe(120_000_000_000);
  });

  // Seen in a full-suite run: three nodes starting at once on a fresh server,
  // one lost the race to create camfleet_relays with "subjects overlap with an
  // existing stream" (10065) and exited. A lost race is success once what it
  // wanted exists; a real overlap still fails.
  it("set-ups racing on fresh servers all succeed; a foreign stream on camfleet's subjects still fails the set-up, in the server's words", async () => {
    for (let round = 0; round < 3; round++) {
      const nats = await startNats({ onCleanup: onTestFinished });
      const ncs = await Promise.all([1, 2, 3, 4, 5, 6].map(() => connect({ servers: nats.url })));
      onTestFinished(() => Promise.all(ncs.map((nc) => nc.close())).then(() => undefined));
      const results = await Promise.allSettled(ncs.map((nc) => ensureJetStream(nc)));
      expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    }

    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "SQUATTER", subjects: [subjects.statusAll] });
    await expect(ensureJetStream(nc)).rejects.toThrow(/stream CAMFLEET_STATUS failed: subjects overlap with an existing stream/);
    await expect(jsm.streams.info(STREAMS.status)).rejects.toThrow(/stream not found/);
  });

  it("a set-up that finds NATS away keeps trying and completes once the server is back; a lasting outage fails with what it was doing", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    onTestFinished(() => nc.close());
    await nats.server.stop();
    const retrying: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        if (chunk.toString("utf8").includes("not answering yet; retrying")) retrying.push(chunk.toString("utf8"));
        done();
      },
    });
    const setup = ensureJetStream(nc, { retryForMs: 30_000, logger: createLogger({ node: "test", level: "warn", destination }) });
    const outcome = setup.then(() => "done", (err: unknown) => err);
    // The server comes back only once the set-up has seen it fail and retried.
    await waitFor(() => retrying.length > 0, { timeoutMs: 15_000, message: "set-up retrying while NATS is away" });
    await nats.server.restart();
    expect(await outcome).toBe("done");
    const jsm = await jetstreamManager(nc);
    for (const name of ALL_STREAMS) expect((await jsm.streams.info(name)).config.num_replicas).toBe(1);

    await nats.server.stop();
    await expect(ensureJetStream(nc, { retryForMs: 1_000 })).rejects.toThrow(/^JetStream set-up failed|^stream CAMFLEET_STATUS failed/);
  });

  it("a new detections stream takes the configured max age and max bytes; a later set-up with other limits leaves it as it is and says so once; applyStreams changes it", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await ensureJetStream(nc, { detections: { maxAgeMs: 3_600_000, maxBytes: 64 << 20, replicas: 1 } });
    let config = (await jsm.streams.info(STREAMS.detections)).config;
    expect([config.max_age, config.max_bytes, config.num_replicas]).toEqual([3_600_000 * 1_000_000, 64 << 20, 1]);

    const warnings: Array<Record<string, unknown>> = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString("utf8").split("\n").filter((l) => l !== "")) {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (parsed.msg === LOG_MESSAGES.streamSettingsDiffer) warnings.push(parsed);
        }
        done();
      },
    });
    const logger = createLogger({ node: "test", level: "warn", destination });
    await ensureJetStream(nc, { detections: { maxAgeMs: 7_200_000, maxBytes: -1 }, logger });
    config = (await jsm.streams.info(STREAMS.detections)).config;
    expect([config.max_age, config.max_bytes]).toEqual([3_600_000 * 1_000_000, 64 << 20]);
    await waitFor(() => warnings.length > 0, { timeoutMs: 5_000, message: "the difference logged" });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      level: "warn",
      stream: STREAMS.detections,
      differences: "max_bytes 64 MiB → no limit (CAMFLEET_DETECTIONS_MAX_BYTES), max_age 1h → 2h (CAMFLEET_DETECTIONS_MAX_AGE_S)",
    });
    // A set-up without settings of its own has no opinion: nothing to say.
    await ensureJetStream(nc, { logger });
    expect(warnings).toHaveLength(1);

    const dry = await applyStreams(nc, { detections: { maxAgeMs: 7_200_000, maxBytes: -1 }, dryRun: true });
    expect(dry.map((r) => [r.stream, r.action])).toEqual([[STREAMS.status, "unchanged"], [STREAMS.detections, "updated"]]);
    expect((await jsm.streams.info(STREAMS.detections)).config.max_bytes).toBe(64 << 20);
    await applyStreams(nc, { detections: { maxAgeMs: 7_200_000, maxBytes: -1 } });
    config = (await jsm.streams.info(STREAMS.detections)).config;
    expect([config.max_age, config.max_bytes]).toEqual([7_200_000 * 1_000_000, -1]);
    // The status stream keeps its own defaults.
    expect((await jsm.streams.info(STREAMS.status)).config.max_age).toBe(24 * 3_600_000 * 1_000_000);
  });

  it("applyStreams on a fresh server: a dry run plans the sizes and creates nothing; a size that does not fit fails the dry run too", async () => {
    const nats = await startNats({ onCleanup: onTestFinished, config: "jetstream { max_file_store: 2GB }\n" });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const names = async () => {
      const all: string[] = [];
      for await (const name of jsm.streams.names()) all.push(name);
      return all.sort();
    };
    const dry = await applyStreams(nc, { dryRun: true });
    expect(dry.map((r) => [r.stream, r.action, r.changes.find((c) => c.field === "max_bytes")?.to])).toEqual([
      [STREAMS.status, "created", 204 << 20],
      [STREAMS.detections, "created", 819 << 20],
    ]);
    expect(await names()).toEqual([]);
    await applyStreams(nc, {});
    expect(await names()).toEqual([STREAMS.detections, STREAMS.status]);
    // 2048 − 204 − 819 = 1025 MiB left, plus the stream's own 819 MiB: 1844 MiB.
    await expect(applyStreams(nc, { dryRun: true, detections: { maxBytes: 2 * 1024 ** 3 } })).rejects.toThrow(
      /^CAMFLEET_DETECTIONS_MAX_BYTES=2147483648 does not fit: the JetStream store has 1.8 GiB free$/,
    );
    expect((await jsm.streams.info(STREAMS.detections)).config.max_bytes).toBe(819 << 20);
    expect(await names()).toEqual([STREAMS.detections, STREAMS.status]);
  });

  it("an account with a JetStream limit of its own (300 MiB on a large server): account info shows it, and the streams are sized to it", async () => {
    const config = "accounts { CF: { jetstream: { max_file: 300MB, max_mem: 64MB }, users: [ { user: cf, password: cf } ] } }\n";
    const nats = await startNats({ onCleanup: onTestFinished, config });
    const nc = await connect({ servers: nats.url, user: "cf", pass: "cf" });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    expect((await jsm.getAccountInfo()).limits.max_storage).toBe(300 << 20);
    await ensureJetStream(nc);
    expect((await jsm.streams.info(STREAMS.status)).config.max_bytes).toBe(30 << 20);
    expect((await jsm.streams.info(STREAMS.detections)).config.max_bytes).toBe(120 << 20);
  });

  it("CAMFLEET_STORAGE=memory: streams and buckets in memory, sized to the memory store; a size too large names the memory store", async () => {
    const nats = await startNats({ onCleanup: onTestFinished, config: "jetstream { max_memory_store: 256MB }\n" });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await expect(ensureJetStream(nc, { storage: "memory", detections: { maxBytes: 512 << 20 } })).rejects.toThrow(
      /^CAMFLEET_DETECTIONS_MAX_BYTES=536870912 does not fit: the JetStream memory store has 256 MiB free$/,
    );
    await ensureJetStream(nc, { storage: "memory" });
    for (const name of ALL_STREAMS) expect((await jsm.streams.info(name)).config.storage).toBe("memory");
    expect((await jsm.streams.info(STREAMS.status)).config.max_bytes).toBe(25 << 20);
    expect((await jsm.streams.info(STREAMS.detections)).config.max_bytes).toBe(102 << 20);
    // A file-storage set-up later does not move them, and says so only where it has an opinion.
    await ensureJetStream(nc);
    expect((await jsm.streams.info(STREAMS.status)).config.storage).toBe("memory");
    await expect(applyStreams(nc, { storage: "file" })).rejects.toThrow(/^CAMFLEET_STORAGE=file cannot change stream CAMFLEET_STATUS, which keeps its messages in memory/);
  });

  it("a cluster of three with 256 MiB stores: three replicas, sized as on one server of that size (the search holds its probes: a cluster learns of freed room late)", async () => {
    const cluster = await startNatsCluster({ onCleanup: onTestFinished, config: "jetstream { max_file_store: 256MB }\n" });
    const nc = await connect({ servers: cluster.urls });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);
    const jsm = await jetstreamManager(nc);
    for (const name of [STREAMS.status, STREAMS.detections]) expect((await jsm.streams.info(name)).config.num_replicas).toBe(3);
    expect((await jsm.streams.info(STREAMS.status)).config.max_bytes).toBe(25 << 20);
    expect((await jsm.streams.info(STREAMS.detections)).config.max_bytes).toBe(102 << 20);
    const names: string[] = [];
    for await (const name of jsm.streams.names()) names.push(name);
    expect(names.sort()).toEqual([...ALL_STREAMS].sort());
  });

  it("three replicas on a cluster of three, also when two nodes set up at once", async () => {
    const cluster = await startNatsCluster({ onCleanup: onTestFinished });
    const nc = await connect({ servers: cluster.urls });
    onTestFinished(() => nc.close());
    expect(defaultReplicas(nc)).toBe(3);
    // Two nodes starting together both run the set-up.
    await Promise.all([ensureJetStream(nc), ensureJetStream(nc)]);
    const jsm = await jetstreamManager(nc);
    for (const name of ALL_STREAMS) expect((await jsm.streams.info(name)).config.num_replicas).toBe(3);
  });
});
