import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  CamfleetError,
  DetectionEventSchema,
  STREAMS,
  StatusEventSchema,
  subjects,
  type DetectionEvent,
  type Scope,
  type StatusEvent,
} from "../../subjects/index.ts";
import { backoffDelay, type Backoff } from "../backoff.ts";
import { silentLogger, type Logger } from "../logger.ts";

/**
 * Redelivery delay of an event whose handler failed: 1 s doubling to 60 s by
 * delivery count. No jitter: the server spaces redeliveries per message, and
 * the count, not a random draw, is what an operator reads in the log.
 */
const REDELIVERY_BACKOFF: Backoff = { initialMs: 1000, maxMs: 60_000, jitter: "none" };

/**
 * Reading camfleet's events back from JetStream: `tailEvents` for a
 * look (ordered consumers, nothing kept on the server, `camfleet events`),
 * and `startAlertConsumer` for work that must see every event at least once
 * (a durable pull consumer with explicit acks: an event is delivered again
 * until the handler has finished with it, across restarts of both sides).
 */

export type EventType = "status" | "detection";
export type CamfleetEvent = StatusEvent | DetectionEvent;

const SOURCES = {
  status: { stream: STREAMS.status, filter: subjects.statusFilter, schema: StatusEventSchema },
  detection: { stream: STREAMS.detections, filter: subjects.detectionsFilter, schema: DetectionEventSchema },
} as const;

const NS_PER_MS = 1_000_000;
const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A start time from `--since`: a duration back from `now` ("90s", "15m",
 * "2h", "7d", "500ms"), an ISO 8601 time, or ms since the Unix epoch.
 * Throws INVALID_ARGUMENT naming the accepted forms.
 */
export function parseSince(text: string, now: number = Date.now()): Date {
  const t = text.trim();
  const duration = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(t);
  if (duration) return new Date(now - Number(duration[1]) * UNITS_MS[duration[2]!]!);
  if (/^\d{1,15}$/.test(t)) return new Date(Number(t));
  if (/^\d{4}-\d{2}-\d{2}/.test(t)) {
    const ms = Date.parse(t);
    if (Number.isFinite(ms)) return new Date(ms);
  }
  throw new CamfleetError("INVALID_ARGUMENT", `since ${JSON.stringify(text)} is neither a duration (e.g. 30s, 15m, 2h, 7d) nor a time (ISO 8601, or ms since the epoch)`);
}

/** Where a consumer starts: everything kept, only new events, or from a time. */
export type StartAt = "all" | "new" | Date;

function deliverFrom(start: StartAt): { deliver_policy: DeliverPolicy; opt_start_time?: string } {
  if (start === "all") return { deliver_policy: DeliverPolicy.All };
  if (start === "new") return { deliver_policy: DeliverPolicy.New };
  return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.toISOString() };
}

export interface EventMeta {
  subject: string;
  /** Stream sequence. */
  seq: number;
  /** Events after this one the consumer still has to deliver. */
  pending: number;
  /** How often this event was delivered, this time included (durable consumers). */
  deliveries: number;
}

function parseEvent(type: EventType, m: JsMsg): CamfleetEvent | undefined {
  try {
    const parsed = SOURCES[type].schema.safeParse(m.json());
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- tail (ordered)

export interface TailOptions {
  types: EventType[];
  scope?: Scope;
  /** Default "new". */
  start?: StartAt;
  /** Keep waiting for new events (default), or stop once everything stored so far was delivered. */
  follow?: boolean;
  onEvent(event: CamfleetEvent, meta: EventMeta): void;
  signal?: AbortSignal;
  logger?: Logger;
}

/**
 * Delivers the events of each type through an ordered consumer (in order,
 * no acks, recreated by the client after a gap). Resolves when `signal`
 * aborts, or, without `follow`, once each stream was read to its end.
 */
export async function tailEvents(nc: NatsConnection, options: TailOptions): Promise<void> {
  const js = jetstream(nc);
  const follow = options.follow ?? true;
  const log = options.logger ?? silentLogger();
  await Promise.all(
    options.types.map(async (type) => {
      const src = SOURCES[type];
      const consumer = await js.consumers.get(src.stream, {
        filter_subjects: src.filter(options.scope),
        ...deliverFrom(options.start ?? "new"),
      });
      if (!follow && (await consumer.info(true)).num_pending === 0) {
        await consumer.delete().catch(() => undefined);
        return;
      }
      const messages = await consumer.consume({ max_messages: 256 });
      const onAbort = () => void messages.close();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const m of messages) {
          const event = parseEvent(type, m);
          if (event === undefined) log.warn({ subject: m.subject, seq: m.seq }, "not a valid event; skipped");
          else options.onEvent(event, { subject: m.subject, seq: m.seq, pending: m.info.pending, deliveries: 1 });
          if (!follow && m.info.pending === 0) break;
        }
      } finally {
        options.signal?.removeEventListener("abort", onAbort);
        await messages.close().catch(() => undefined);
      }
    }),
  );
}

// ---------------------------------------------------------------- alert consumer (durable)

export interface AlertConsumerOptions<E extends CamfleetEvent = DetectionEvent> {
  /** Durable consumer name: the server remembers what was acked under it. ^[A-Za-z0-9_-]+$ */
  durable: string;
  /** Default "detection". */
  type?: E extends StatusEvent ? "status" : "detection";
  scope?: Scope;
  /** Where a new durable starts; an existing one goes on where it was. Default "all". */
  start?: StartAt;
  /**
   * Called once per delivery; the event is acked when it resolves, and
   * delivered again (after a growing delay) when it throws. At-least-once:
   * a handler that crashes after its side effect sees the event again.
   */
  handler(event: E, meta: EventMeta): Promise<void> | void;
  /** How long the server waits for the ack before it delivers again, ms. Default 30000. */
  ackWaitMs?: number;
  /** Events delivered and not yet acked at most. Default 256. */
  maxAckPending?: number;
  logger?: Logger;
}

export interface AlertConsumer {
  /** Events waiting for this consumer when it started. */
  readonly pendingAtStart: number;
  /** Resolves once stop() was called and the current handler has finished. */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a durable pull consumer over detection (or status) events and runs
 * `handler` for each, one at a time, in stream order; creates the durable on
 * first use. Consumption survives NATS reconnects and server restarts.
 */
export async function startAlertConsumer<E extends CamfleetEvent = DetectionEvent>(
  nc: NatsConnection,
  options: AlertConsumerOptions<E>,
): Promise<AlertConsumer> {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(options.durable)) {
    throw new CamfleetError("INVALID_ARGUMENT", "durable must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'");
  }
  const type: EventType = options.type ?? "detection";
  const src = SOURCES[type];
  const log = (options.logger ?? silentLogger()).child({ durable: options.durable, stream: src.stream });
  const jsm = await jetstreamManager(nc);
  const filter = src.filter(options.scope);
  let info;
  try {
    info = await jsm.consumers.info(src.stream, options.durable);
    if (info.config.filter_subject !== filter) {
      log.warn({ have: info.config.filter_subject, want: filter }, "durable exists with another filter; keeping it (delete it to change)");
    }
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
    info = await jsm.consumers.add(src.stream, {
      durable_name: options.durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: filter,
      ack_wait: (options.ackWaitMs ?? 30_000) * NS_PER_MS,
      max_ack_pending: options.maxAckPending ?? 256,
      max_deliver: -1,
      ...deliverFrom(options.start ?? "all"),
    });
  }
  const js = jetstream(nc);
  let stopped = false;
  let messages: ConsumerMessages | undefined;

  const run = async () => {
    while (!stopped) {
      try {
        const consumer = await js.consumers.get(src.stream, options.durable);
        messages = await consumer.consume({ max_messages: Math.min(256, options.maxAckPending ?? 256) });
        // stop() may have come while consume() was being set up: it could not close these.
        // Not awaited: close() settles only once the iterator is read (nats.js 3.4).
        if (stopped) {
          void messages.close();
          break;
        }
        for await (const m of messages) {
          if (stopped) break;
          const event = parseEvent(type, m);
          if (event === undefined) {
            log.warn({ subject: m.subject, seq: m.seq }, "not a valid event; terminated (never delivered again)");
            m.term();
            continue;
          }
          const meta = { subject: m.subject, seq: m.seq, pending: m.info.pending, deliveries: m.info.deliveryCount };
          try {
            await options.handler(event as E, meta);
            // Confirmed by the server, so a crash right after cannot lose the ack silently.
            await m.ackAck().catch(() => m.ack());
          } catch (err) {
            const delayMs = backoffDelay(REDELIVERY_BACKOFF, m.info.deliveryCount);
            log.warn({ err, subject: m.subject, seq: m.seq, deliveries: m.info.deliveryCount, retry_in_ms: delayMs }, "handler failed; the event will be delivered again");
            m.nak(delayMs);
          }
        }
      } catch (err) {
        if (!stopped) log.warn({ err }, "consuming failed; starting again");
      }
      // The iterator ended without stop(): the consumer went away or broke; try again shortly.
      if (!stopped) await new Promise((r) => setTimeout(r, 1000));
    }
  };
  const done = run();
  return {
    pendingAtStart: info.num_pending,
    done,
    async stop() {
      stopped = true;
      // The loop reading `messages` ends once they are closed; `done` says when.
      void messages?.close().catch(() => undefined);
      await done;
    },
  };
}
