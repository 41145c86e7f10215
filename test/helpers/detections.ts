// Reading DetectionEvents back from CAMFLEET_DETECTIONS in tests, with the
// Nats-Msg-Id each was stored under.

import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { DetectionEventSchema, detectionMsgId, MSG_ID_HEADER, STREAMS, subjects, type DetectionEvent, type Scope, type StatusEvent } from "../../subjects/index.ts";

export interface StoredDetection {
  event: DetectionEvent;
  msgId: string | undefined;
  subject: string;
  seq: number;
}

/** Every DetectionEvent stored now (optionally of one scope), in stream order; each must parse. */
export async function readDetections(nc: NatsConnection, scope?: Scope, timeoutMs = 10_000): Promise<StoredDetection[]> {
  const filter = subjects.detectionsFilter(scope);
  const info = await (await jetstreamManager(nc)).streams.info(STREAMS.detections, { subjects_filter: filter });
  const stored = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
  const out: StoredDetection[] = [];
  if (stored === 0) return out;
  const consumer = await jetstream(nc).consumers.get(STREAMS.detections, { deliver_policy: DeliverPolicy.All, filter_subjects: filter });
  const messages = await consumer.consume();
  const timer = setTimeout(() => void messages.close(), timeoutMs);
  try {
    for await (const m of messages) {
      out.push({ event: DetectionEventSchema.parse(m.json()), msgId: m.headers?.get(MSG_ID_HEADER), subject: m.subject, seq: m.seq });
      if (m.info.pending === 0) break;
    }
  } finally {
    clearTimeout(timer);
    await messages.close();
  }
  return out;
}

/** Where an event comes from. */
export type EventSource = { camera: string; tenant: string; site: string };

/**
 * Event factories for tests that publish events themselves: valid by the
 * schemas, frame ids counted per process so message ids never repeat.
 */
let nextFrame = 0;

/** A DetectionEvent with `boxes` identical motion boxes. */
export function detectionEvent(w: EventSource, boxes = 1): DetectionEvent {
  const frameId = nextFrame++;
  return {
    type: "detection",
    id: detectionMsgId(w.camera, 1, frameId),
    ...w,
    node: "n1",
    epoch: 1,
    frame_id: frameId,
    frame_ts: Date.now(),
    ts: Date.now(),
    solutions: ["motion"],
    detections: Array.from({ length: boxes }, () => ({ label: "motion", score: 0.5, box: { x: 0.1, y: 0.1, w: 0.2, h: 0.2 } })),
    latency: { inference_ms: 3, e2e_ms: 5 },
  };
}

/** A STREAMING StatusEvent. */
export function statusEvent(w: EventSource, trigger: StatusEvent["trigger"] = "edge"): StatusEvent {
  return { type: "status", ...w, node: "n1", epoch: 1, state: "STREAMING", trigger, ts: Date.now() };
}
