// The webhook forwarder example (examples/webhook-forwarder.ts) on the
// runtime's alert consumer: a real HTTP receiver that fails at first, real
// JetStream; every event arrives, and none is acked before a 2xx.

import { createServer, type IncomingMessage } from "node:http";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, onTestFinished, test } from "vitest";
import { forward } from "../examples/webhook-forwarder.ts";
import { ensureJetStream, startAlertConsumer } from "../runtime/index.ts";
import { detectionMsgId, STREAMS, subjects, type DetectionEvent } from "../subjects/index.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

function body(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    req.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => resolve(text));
  });
}

describe("webhook forwarder", () => {
  test("each detection is POSTed until the receiver takes it; acked only after a 2xx; a restarted forwarder resends nothing", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);

    // The receiver refuses the first 4 requests (500), then takes everything.
    let requests = 0;
    const received: DetectionEvent[] = [];
    const keys: string[] = [];
    const server = createServer(async (req, res) => {
      const text = await body(req);
      requests++;
      if (requests <= 4) {
        res.writeHead(500).end();
        return;
      }
      received.push(JSON.parse(text) as DetectionEvent);
      keys.push(String(req.headers["idempotency-key"]));
      res.writeHead(204).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;

    const js = jetstream(nc);
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = detectionMsgId("door", 1, i);
      const event: DetectionEvent = {
        type: "detection", id, camera: "door", tenant: "default", site: "default", node: "n1", epoch: 1, frame_id: i, frame_ts: Date.now(), ts: Date.now(),
        solutions: ["motion"], detections: [{ label: "motion", score: 0.9, box: { x: 0, y: 0, w: 0.5, h: 0.5 } }], latency: { inference_ms: 1, e2e_ms: 2 },
      };
      await js.publish(subjects.detections("door"), JSON.stringify(event), { msgID: id });
      sent.push(id);
    }

    const start = () => startAlertConsumer(nc, { durable: "hook", scope: { camera: "door" }, handler: (event) => forward(event, { url, attempts: 2, timeoutMs: 2000 }) });
    const consumer = await start();
    await waitFor(() => new Set(received.map((e) => e.id)).size === 5, { timeoutMs: 20_000, message: "all 5 events delivered to the webhook" });
    expect(requests).toBeGreaterThanOrEqual(9); // 4 refused + 5 taken
    expect(keys).toEqual(received.map((e) => e.id));
    expect(new Set(received.map((e) => e.id))).toEqual(new Set(sent));
    const jsm = await jetstreamManager(nc);
    await waitFor(async () => (await jsm.consumers.info(STREAMS.detections, "hook")).num_ack_pending === 0, { message: "every delivery acked" });
    await consumer.stop();

    // Same durable again: everything was acked, so nothing comes twice.
    const before = requests;
    const again = await start();
    onTestFinished(() => again.stop());
    expect(again.pendingAtStart).toBe(0);
    const info = await jsm.consumers.info(STREAMS.detections, "hook");
    expect(info.num_pending + info.num_ack_pending).toBe(0);
    expect(requests).toBe(before);
  });
});
