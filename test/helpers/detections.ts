// Reading DetectionEvents back from CAMFLEET_DETECTIONS in tests, with the
// Nats-Msg-Id each was stored under.

import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { DetectionEventSchema, MSG_ID_HEADER, STREAMS, subjects, type DetectionEvent, type Scope } from "../../subjects/index.ts";

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
