// GET /events makes an event's SSE record once for all the clients level with
// each other (gateway/routes/events.ts, sseRecord): clients at other positions
// of the same feed must still get their own ids.

import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { expect, it, onTestFinished } from "vitest";
import { ensureJetStream } from "../runtime/index.ts";
import { subjects } from "../subjects/index.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { detectionEvent, statusEvent } from "./helpers/detections.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

const CAM = { camera: "c1", tenant: "acme", site: "hq" };

/** An SSE client (fetch + eventsource-parser): every record with data, in order. */
async function openSse(url: string) {
  const ctl = new AbortController();
  onTestFinished(() => ctl.abort());
  const res = await fetch(url, { headers: { accept: "text/event-stream" }, signal: ctl.signal });
  expect(res.status).toBe(200);
  const records: EventSourceMessage[] = [];
  let started = false;
  const parser = createParser({ onEvent: (e) => void records.push(e) });
  void (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        started = true;
        parser.feed(decoder.decode(chunk, { stream: true }));
      }
    } catch {
      // aborted at the end of the test
    }
  })();
  await waitFor(() => started, { message: "the stream's first record" });
  return { detections: () => records.filter((r) => r.event === "detection") };
}

it("gives each client its own ids when clients at different positions get the same event", async () => {
  const nats = await startNats({ onCleanup: onTestFinished });
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  await ensureJetStream(nc);
  const js = jetstream(nc);
  const gw = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });

  // Status events before anyone listens: a client of both streams starts past them, a detection-only client at s0.
  for (let i = 0; i < 3; i++) await js.publish(subjects.status(CAM.camera, CAM.tenant, CAM.site), JSON.stringify(statusEvent(CAM)));
  // a and c are level with each other; b reads the same detection feed from another position.
  const a = await openSse(`${gw.url}/events`);
  const b = await openSse(`${gw.url}/events?type=detection`);
  const c = await openSse(`${gw.url}/events`);
  const seqs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const e = detectionEvent(CAM);
    seqs.push((await js.publish(subjects.detections(CAM.camera, CAM.tenant, CAM.site), JSON.stringify(e), { msgID: e.id })).seq);
  }
  await waitFor(() => [a, b, c].every((x) => x.detections().length === seqs.length), { message: "every client got the 5 detections" });

  expect(a.detections().map((r) => r.id)).toEqual(seqs.map((d) => `s3-d${d}`));
  expect(b.detections().map((r) => r.id)).toEqual(seqs.map((d) => `s0-d${d}`));
  expect(c.detections().map((r) => r.id)).toEqual(a.detections().map((r) => r.id));
  // The same event, whatever the id.
  expect(b.detections().map((r) => r.data)).toEqual(a.detections().map((r) => r.data));
  expect(JSON.parse(a.detections()[0]!.data)).toMatchObject({ type: "detection", camera: "c1" });
});
