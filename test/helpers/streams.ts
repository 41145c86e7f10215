// Reading a JetStream stream to its end as it stands now, for checks: one
// consumer per read, deleted afterwards, so a test that polls a stream does
// not leave a consumer behind per poll.

import { randomUUID } from "node:crypto";
import { DeliverPolicy, jetstream, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** Name prefix of the readers' consumers, so a leak check can tell them from the runtime's own. */
export const CHECK_CONSUMER_PREFIX = "faultcheck";

export type ReadFrom =
  | { deliver_policy: typeof DeliverPolicy.All }
  | { deliver_policy: typeof DeliverPolicy.StartSequence; opt_start_seq: number }
  | { deliver_policy: typeof DeliverPolicy.StartTime; opt_start_time: string };

/**
 * Reads `stream` from where `from` says to `lastSeq` (its last message when
 * the caller looked), with an ordered consumer that is deleted afterwards;
 * throws if the end was not reached within `timeoutMs`.
 */
export async function readStreamToEnd<T>(
  nc: NatsConnection,
  stream: string,
  from: ReadFrom & { filter_subjects?: string },
  lastSeq: number,
  parse: (m: JsMsg) => T,
  timeoutMs: number,
): Promise<T[]> {
  const out: T[] = [];
  const consumer = await jetstream(nc).consumers.get(stream, { ...from, name_prefix: `${CHECK_CONSUMER_PREFIX}_${randomUUID().replaceAll("-", "")}` });
  const messages = await consumer.consume();
  const timer = setTimeout(() => void messages.close(), timeoutMs);
  let complete = false;
  try {
    for await (const m of messages) {
      out.push(parse(m));
      if (m.seq >= lastSeq) {
        complete = true;
        break;
      }
    }
  } finally {
    clearTimeout(timer);
    await messages.close();
    await consumer.delete().catch(() => undefined);
  }
  if (!complete) throw new Error(`reading ${stream} up to ${lastSeq} did not complete within ${timeoutMs} ms (${out.length} read)`);
  return out;
}
