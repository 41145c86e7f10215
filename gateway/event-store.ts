import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "../runtime/index.ts";
import type { CamfleetEvent, EventType } from "../runtime/index.ts";
import { DetectionEventSchema, STREAMS, StatusEventSchema, subjects, type Scope } from "../subjects/index.ts";

/**
 * Positions in camfleet's two event streams and reads of a range of them,
 * for the gateway's live feeds (event-hub.ts) and its detection history.
 * Everything is by stream sequence: a time is turned into the first
 * sequence stored at or after it, once, and from then on positions are
 * exact (no clock comparisons, nothing read twice).
 */

export const EVENT_SOURCES = {
  status: { stream: STREAMS.status, filter: subjects.statusFilter, schema: StatusEventSchema },
  detection: { stream: STREAMS.detections, filter: subjects.detectionsFilter, schema: DetectionEventSchema },
} as const satisfies Record<EventType, unknown>;

export interface StoredEvent {
  type: EventType;
  /** Stream sequence. */
  seq: number;
  /** When JetStream stored it, ms since the epoch. */
  storedMs: number;
  event: CamfleetEvent;
  /** The event's JSON, made once however many clients get it (see eventJson). */
  json?: string;
}

/** The event as JSON, serialized once per event for all the clients of a feed. */
export function eventJson(e: StoredEvent): string {
  return (e.json ??= JSON.stringify(e.event));
}

export function filterOf(type: EventType, scope: Scope): string {
  return EVENT_SOURCES[type].filter(scope);
}

/** The event in a message, or undefined when it does not match its schema. */
export function parseStored(type: EventType, m: JsMsg): StoredEvent | undefined {
  let parsed;
  try {
    parsed = EVENT_SOURCES[type].schema.safeParse(m.json());
  } catch {
    return undefined;
  }
  if (!parsed.success) return undefined;
  return { type, seq: m.seq, storedMs: Math.floor(m.info.timestampNanos / 1_000_000), event: parsed.data };
}

const PROBE = {
  ack_policy: AckPolicy.None,
  mem_storage: true,
  num_replicas: 1,
  inactive_threshold: 30_000_000_000,
} as const;

export class EventStore {
  readonly js: JetStreamClient;
  private jsmP: Promise<JetStreamManager>;

  constructor(readonly nc: NatsConnection) {
    this.js = jetstream(nc);
    this.jsmP = jetstreamManager(nc);
  }

  /** The last sequence of the stream of `type` (0 when empty). */
  async lastSeq(type: EventType): Promise<number> {
    const jsm = await this.jsmP;
    return (await jsm.streams.info(EVENT_SOURCES[type].stream)).state.last_seq;
  }

  /**
   * A throw-away consumer's view from a start: how many messages of `filter`
   * remain from there, and the sequence it starts at. Deleted at once.
   */
  private async probe(type: EventType, filter: string, start: { seq: number } | { time: Date }): Promise<{ startSeq: number; pending: number }> {
    const jsm = await this.jsmP;
    const stream = EVENT_SOURCES[type].stream;
    const ci = await jsm.consumers.add(stream, {
      ...PROBE,
      filter_subject: filter,
      ...("seq" in start
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, start.seq) }
        : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.time.toISOString() }),
    });
    void jsm.consumers.delete(stream, ci.name).catch(() => undefined);
    // A new consumer reports delivered.stream_seq = its first sequence - 1.
    return { startSeq: ci.delivered.stream_seq + 1, pending: ci.num_pending };
  }

  /** The first sequence stored at or after `time` (last sequence + 1 when there is none). */
  async firstSeqAtOrAfter(type: EventType, time: Date): Promise<number> {
    return (await this.probe(type, EVENT_SOURCES[type].filter(), { time })).startSeq;
  }

  /** How many messages of `filter` are stored at sequence `seq` or later. */
  async countFrom(type: EventType, filter: string, seq: number): Promise<number> {
    return (await this.probe(type, filter, { seq })).pending;
  }

  /**
   * Reads the events of `filter` with sequences in [fromSeq, toSeq] in order,
   * at most `max`, calling `onEvent` for each (awaited: a slow reader slows
   * the read, nothing piles up). Ends early when `onEvent` returns false.
   * Messages that do not match their schema are skipped.
   */
  async readRange(
    type: EventType,
    filter: string,
    fromSeq: number,
    toSeq: number,
    onEvent: (e: StoredEvent) => boolean | void | Promise<boolean | void>,
    opts: { max?: number; signal?: AbortSignal } = {},
  ): Promise<{ read: number; lastSeq: number }> {
    const max = opts.max ?? Number.POSITIVE_INFINITY;
    let read = 0;
    let lastSeq = fromSeq - 1;
    if (toSeq < fromSeq || max <= 0 || opts.signal?.aborted) return { read, lastSeq };
    const consumer = await this.js.consumers.get(EVENT_SOURCES[type].stream, {
      filter_subjects: filter,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Math.max(1, fromSeq),
    });
    if ((await consumer.info(true)).num_pending === 0) {
      void consumer.delete().catch(() => undefined);
      return { read, lastSeq };
    }
    const messages = await consumer.consume({ max_messages: Math.max(1, Math.min(256, Number.isFinite(max) ? max + 1 : 256)) });
    const onAbort = () => void messages.close();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const m of messages) {
        if (m.seq > toSeq || opts.signal?.aborted) break;
        lastSeq = m.seq;
        const stored = parseStored(type, m);
        if (stored !== undefined) {
          read++;
          if ((await onEvent(stored)) === false || read >= max) break;
        }
        if (m.info.pending === 0 || m.seq >= toSeq) break;
      }
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      void messages.close().catch(() => undefined);
      void consumer.delete().catch(() => undefined);
    }
    return { read, lastSeq };
  }
}
