// The bounded async publisher of detections (runtime/event-publisher.ts)
// against a real nats-server that goes away: what fits in the buffer is
// stored once when NATS is back; what does not is dropped, counted and logged.

import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { Writable } from "node:stream";
import { describe, expect, onTestFinished, test } from "vitest";
import { BufferedPublisher, createLogger, createRegistry, ensureJetStream } from "../runtime/index.ts";
import { STREAMS, subjects } from "../subjects/index.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

describe("buffered detection publisher", () => {
  test("while NATS is down: the buffer is kept and stored exactly once after the restart; overflow is dropped, counted and logged", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);
    const jsm = await jetstreamManager(nc);

    const lines: string[] = [];
    const logger = createLogger({ node: "pub", level: "warn", destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) });
    const registry = createRegistry({ node: "pub" }, { processMetrics: false });
    const publisher = new BufferedPublisher({ js: jetstream(nc), capacity: 20, ackTimeoutMs: 500, logger, registry, metricPrefix: "camfleet_detections" });
    onTestFinished(() => publisher.stop());

    const subject = subjects.detections("cam");
    for (let i = 0; i < 5; i++) expect(publisher.publish(subject, JSON.stringify({ i }), `cam:1:${i}`)).toBe("queued");
    expect(await publisher.flush(5000)).toBe(true);

    await nats.server.stop();
    const outcomes = Array.from({ length: 25 }, (_, k) => publisher.publish(subject, JSON.stringify({ i: 5 + k }), `cam:1:${5 + k}`));
    expect(outcomes.filter((o) => o === "queued")).toHaveLength(20);
    expect(outcomes.slice(20)).toEqual(["overflow", "overflow", "overflow", "overflow", "overflow"]);
    expect(publisher.stats.dropped).toBe(5);
    expect(await registry.getSingleMetricAsString("camfleet_detections_dropped_total")).toMatch(/camfleet_detections_dropped_total\{node="pub"\} 5/);
    expect(lines.some((l) => l.includes("publish buffer full"))).toBe(true);
    // Attempts time out while the server is gone: retried, not lost.
    await waitFor(() => publisher.stats.retried > 0, { timeoutMs: 5000, message: "a publish retried" });
    expect(publisher.pending).toBe(20);

    await nats.server.start();
    expect(await publisher.flush(20_000)).toBe(true);
    const state = (await jsm.streams.info(STREAMS.detections)).state;
    expect(state.messages).toBe(25); // 5 before + 20 buffered, each once despite the retries
    expect(publisher.stats.failed).toBe(0);
    expect(publisher.publish(subject, "{}", "cam:1:5")).toBe("queued"); // a repeat of a stored id…
    expect(await publisher.flush(5000)).toBe(true);
    expect((await jsm.streams.info(STREAMS.detections)).state.messages).toBe(25); // …is de-duplicated by JetStream
    expect(publisher.stats.duplicates).toBeGreaterThanOrEqual(1);
  });

  test("an event whose sender lost the right to speak while NATS was away is never sent late: dropped and counted", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);
    const jsm = await jetstreamManager(nc);
    const registry = createRegistry({ node: "pub" }, { processMetrics: false });
    const publisher = new BufferedPublisher({ js: jetstream(nc), capacity: 100, ackTimeoutMs: 500, logger: createLogger({ node: "pub", level: "silent" }), registry, metricPrefix: "camfleet_detections" });
    onTestFinished(() => publisher.stop());

    // Two cameras; the node keeps the lease of one and fences itself on the other while NATS is down.
    let holdsB = true;
    await nats.server.stop();
    for (let i = 0; i < 5; i++) {
      publisher.publish(subjects.detections("a"), JSON.stringify({ i }), `a:1:${i}`, () => true);
      publisher.publish(subjects.detections("b"), JSON.stringify({ i }), `b:1:${i}`, () => holdsB);
    }
    await waitFor(() => publisher.stats.retried > 0, { timeoutMs: 5000, message: "attempts failing while NATS is down" });
    holdsB = false;
    await nats.server.start();
    expect(await publisher.flush(20_000)).toBe(true);
    const stored = (await jsm.streams.info(STREAMS.detections, { subjects_filter: ">" })).state.subjects ?? {};
    expect(stored[subjects.detections("a")]).toBe(5);
    expect(stored[subjects.detections("b")]).toBeUndefined();
    expect(publisher.stats.fenced).toBe(5);
    expect(await registry.getSingleMetricAsString("camfleet_detections_fenced_total")).toMatch(/camfleet_detections_fenced_total\{node="pub"\} 5/);
  });
});
