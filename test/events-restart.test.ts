// Detections across a nats-server restart, then a detector restart: a node keeps analysing a moving
// camera while its nats-server is stopped and started again, and a durable
// alert consumer (runtime/event-consumers.ts) reads along. Every event the
// node queued reaches the stream once, and the consumer sees each once.

import { connect } from "@nats-io/transport-node";
import { describe, expect, onTestFinished, test } from "vitest";
import { ReferenceDetector, serveDetector } from "../proto/index.ts";
import { ControlClient, LOG_MESSAGES, startAlertConsumer } from "../runtime/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { readDetections } from "./helpers/detections.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

/** The value of a counter in Prometheus text, summed over the series that match `labels`. */
function metric(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      if (labels !== "" && !line.includes(labels)) continue;
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

describe("detections across a nats-server restart and a detector restart", () => {
  test("every queued event is stored exactly once, and the durable consumer sees each exactly once", async () => {
    let detector = await serveDetector(new ReferenceDetector(), { listen: "127.0.0.1:0" });
    onTestFinished(() => detector.stop());
    const nats = await startNats({ onCleanup: onTestFinished });
    const node = runCamfleet(["node"], {
      env: { NATS_URL: nats.url, NODE_ID: "n1", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true", AI_ENDPOINT: detector.address },
      onCleanup: onTestFinished,
    });
    const ops = String((await node.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps)).url);
    await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    await client.putCamera({ id: "busy", url: "testsrc:?size=320x240&rate=10", publish: "off", ai: { enabled: true, max_fps: 10, motion_gate: false } }); // every sampled frame analysed: events all through the outage

    const seen: string[] = [];
    const consumer = await startAlertConsumer(nc, { durable: "restart-test", scope: { camera: "busy" }, handler: (event) => void seen.push(event.id) });
    onTestFinished(() => consumer.stop());
    await waitFor(() => seen.length >= 10, { timeoutMs: 20_000, message: "10 events consumed before the restart" });

    const before = seen.length;
    await nats.server.stop();
    await nats.server.start();
    await node.waitForLog((l) => l.msg === LOG_MESSAGES.reconnectedToNats);
    await waitFor(() => seen.length >= before + 20, { timeoutMs: 30_000, message: "20 more events consumed after the restart" });

    // The detector restarts on the same address: the frames in between are not analysed, none twice.
    const address = detector.address;
    await detector.stop();
    const beforeDetector = seen.length;
    detector = await serveDetector(new ReferenceDetector(), { listen: address });
    await waitFor(() => seen.length >= beforeDetector + 10, { timeoutMs: 30_000, message: "10 more events consumed after the detector restarted" });

    // Analysis off (the camera keeps running, so its series stay: a stopped camera's are removed).
    await client.startCamera("busy", { ai: { enabled: false } });
    // Everything the node queued for the camera, once its buffer is empty.
    const queued = await waitFor(async () => {
      const text = await (await fetch(`${ops}/metrics`)).text();
      return metric(text, "camfleet_detections_buffered") === 0 ? metric(text, "camfleet_detections_published_total", 'camera="busy"') : undefined;
    }, { timeoutMs: 20_000, message: "publish buffer empty" });
    const metrics = await (await fetch(`${ops}/metrics`)).text();
    const stored = await waitFor(async () => {
      const d = await readDetections(nc, { camera: "busy" });
      return d.length >= queued && seen.length >= d.length ? d : undefined;
    }, { timeoutMs: 20_000, message: `all ${queued} queued events stored and consumed` });

    const ids = stored.map((d) => d.event.id);
    console.log(
      `restart: ${queued} events queued, ${stored.length} stored, ${seen.length} consumed; ` +
        `retries ${metric(metrics, "camfleet_detections_publish_retries_total")}, dropped ${metric(metrics, "camfleet_detections_dropped_total")}`,
    );
    expect(stored.length).toBe(queued);
    expect(new Set(ids).size).toBe(ids.length);
    // One epoch (the node kept its lease through both restarts), and its frame ids each once.
    const frames = stored.map((d) => d.event.frame_id);
    expect(new Set(stored.map((d) => d.event.epoch)).size).toBe(1);
    expect(new Set(frames).size).toBe(frames.length);
    expect(seen.length).toBe(ids.length);
    expect(new Set(seen)).toEqual(new Set(ids));
    expect(metric(metrics, "camfleet_detections_dropped_total")).toBe(0);
  }, 150_000); // the waits inside have deadlines of their own; this only bounds their sum
});
