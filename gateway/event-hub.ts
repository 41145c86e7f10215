import { DeliverPolicy, type ConsumerMessages } from "@nats-io/jetstream";
import type { EventType, Logger } from "../runtime/index.ts";
import { CamfleetError, type Scope } from "../subjects/index.ts";
import { EVENT_SOURCES, filterOf, parseStored, type EventStore, type StoredEvent } from "./event-store.ts";

/**
 * Live event feeds of the gateway (GET /events, GET /ws).
 *
 * Positions: a client's place is one cursor per stream, the last sequence
 * of CAMFLEET_STATUS and of CAMFLEET_DETECTIONS it has been given (or
 * skipped past). Every event it gets carries both as its id,
 * `s<statusSeq>-d<detectionSeq>`; resuming from an id starts each stream
 * right after its part, so nothing is lost and nothing repeats.
 *
 * Fan-out: one hub per (stream, filter subject) reads the stream once
 * through an ordered consumer that starts at the stream's end, and hands
 * every event to all its clients. A client whose cursor is behind the hub
 * (a resume, or `since`) first reads the gap [cursor+1, hub position] with
 * its own short-lived ordered consumer while the hub's new events wait in a
 * bounded queue, then joins the hub; events at or below its cursor are
 * never sent again. A hub closes when its last client leaves.
 *
 * Slow clients: a client whose socket holds more than `maxBufferedBytes`
 * unsent, whose catch-up queue passes `maxQueuedEvents`, or that takes
 * nothing for `stallMs` while its gap is read, is dropped with a reason.
 */

export type EventCursor = Record<EventType, number>;

const ID_RE = /^s(\d{1,16})-d(\d{1,16})$/;

export function formatEventId(c: EventCursor): string {
  return `s${c.status}-d${c.detection}`;
}

/** Parses an event id (`s<statusSeq>-d<detectionSeq>`); INVALID_ARGUMENT otherwise. */
export function parseEventId(text: string): EventCursor {
  const m = ID_RE.exec(text.trim());
  if (!m) throw new CamfleetError("INVALID_ARGUMENT", `event id ${JSON.stringify(text.slice(0, 80))} is not of the form s<status seq>-d<detection seq>, e.g. s120-d4711`);
  return { status: Number(m[1]), detection: Number(m[2]) };
}

/** Where a client starts: after an id, at a time, or at the streams' ends now. */
export type FeedStart = { after: EventCursor } | { time: Date } | "new";

/** Why the gateway ended a client's feed: `slow_client`, `shutdown` (the gateway stops), `feed_failed` (reading JetStream failed). */
export interface EndReason {
  reason: "slow_client" | "shutdown" | "feed_failed";
  message: string;
}

/** Where events of one client go: an SSE response or a WebSocket. */
export interface EventSink {
  /** Hands one event to the socket (never waits). */
  send(id: string, e: StoredEvent): void;
  /** Bytes handed to the socket and not yet taken by the client. */
  bufferedBytes(): number;
  /** Resolves when the buffered bytes are taken (or the sink closed). */
  drained(): Promise<void>;
  heartbeat(): void;
  /** Ends the connection telling why (a slow client, the gateway stopping, the feed failing). */
  end(reason: EndReason): void;
  readonly closed: boolean;
  onClose(fn: () => void): void;
}

export interface FeedTuning {
  /** Unsent bytes a client's socket may hold before it is dropped. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Events that may wait for a client still catching up before it is dropped. Default 10000. */
  maxQueuedEvents?: number;
  /** Heartbeat period, ms. Default 15000. */
  heartbeatMs?: number;
  /** How long a client catching up may take nothing before it is dropped, ms. Default 30000. */
  stallMs?: number;
}

const DEFAULTS: Required<FeedTuning> = { maxBufferedBytes: 1024 * 1024, maxQueuedEvents: 10_000, heartbeatMs: 15_000, stallMs: 30_000 };

/** One ordered consumer over a stream and filter, shared by every client of that filter. */
class Hub {
  /** Every event at or below this sequence has been handed out (or was before the hub began). */
  position = 0;
  readonly taps = new Set<(e: StoredEvent) => void>();
  readonly failed = new Set<(reason: string) => void>();
  private messages: ConsumerMessages | undefined;
  private deleteConsumer: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly store: EventStore,
    readonly type: EventType,
    readonly filter: string,
    private readonly log: Logger,
    private readonly onEnded: () => void,
  ) {}

  async start(): Promise<void> {
    this.position = await this.store.lastSeq(this.type);
    const consumer = await this.store.js.consumers.get(EVENT_SOURCES[this.type].stream, {
      filter_subjects: this.filter,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.position + 1,
    });
    this.deleteConsumer = () => void consumer.delete().catch(() => undefined);
    this.messages = await consumer.consume({ max_messages: 256 });
    if (this.closed) this.close();
    void this.run(this.messages);
  }

  private async run(messages: ConsumerMessages): Promise<void> {
    let why = "the event stream ended";
    try {
      for await (const m of messages) {
        const stored = parseStored(this.type, m);
        this.position = m.seq;
        if (stored === undefined) {
          this.log.warn({ subject: m.subject, seq: m.seq }, "not a valid event; skipped");
          continue;
        }
        for (const tap of this.taps) tap(stored);
      }
    } catch (err) {
      why = `reading the event stream failed: ${(err as Error).message}`;
    }
    this.onEnded();
    if (!this.closed) {
      this.log.warn({ stream: EVENT_SOURCES[this.type].stream, filter: this.filter, reason: why }, "event feed ended; its clients are closed");
      for (const f of this.failed) f(why);
    }
  }

  close(): void {
    this.closed = true;
    void this.messages?.close().catch(() => undefined);
    // Not left to its inactivity threshold (5 min): the server forgets it now.
    this.deleteConsumer?.();
  }
}

export interface FeedFilter {
  scope: Scope;
  types: EventType[];
}

export class EventFeeds {
  private readonly hubs = new Map<string, Promise<Hub>>();
  private readonly clients = new Set<FeedClient>();
  readonly tuning: Required<FeedTuning>;
  private stopped = false;

  constructor(
    readonly store: EventStore,
    private readonly log: Logger,
    tuning: FeedTuning = {},
  ) {
    this.tuning = { ...DEFAULTS, ...tuning };
  }

  /** Hubs running now (for tests and metrics): one per stream and filter in use. */
  get hubCount(): number {
    return this.hubs.size;
  }

  get stopping(): boolean {
    return this.stopped;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Feeds the gateway ended, by reason, since it started (metrics). Clients that leave by themselves are not counted. */
  readonly ended: Record<EndReason["reason"], number> = { slow_client: 0, shutdown: 0, feed_failed: 0 };

  /** The cursor a client starts from; resolved before its stream opens, so a bad start is an HTTP error. */
  async resolve(filter: FeedFilter, start: FeedStart): Promise<EventCursor> {
    const cursor: EventCursor = typeof start === "object" && "after" in start ? { ...start.after } : { status: 0, detection: 0 };
    await Promise.all(
      filter.types.map(async (type) => {
        if (start === "new") cursor[type] = await this.store.lastSeq(type);
        else if ("time" in start) cursor[type] = (await this.store.firstSeqAtOrAfter(type, start.time)) - 1;
        // An id past the stream's end (the stream was made anew): go on from its end.
        else cursor[type] = Math.min(cursor[type], await this.store.lastSeq(type));
      }),
    );
    return cursor;
  }

  /** Starts delivering to `sink` from `cursor`. Ends when the sink closes. */
  open(filter: FeedFilter, cursor: EventCursor, sink: EventSink): FeedClient {
    if (this.stopped) throw new CamfleetError("UNAVAILABLE", "the gateway is stopping");
    const client = new FeedClient(this, filter, cursor, sink, this.log);
    this.clients.add(client);
    client.start();
    return client;
  }

  /** @internal A hub for the stream and filter, started if it is new; counted in by `attach`. */
  async hub(type: EventType, scope: Scope): Promise<Hub> {
    const filter = filterOf(type, scope);
    const key = `${type} ${filter}`;
    let p = this.hubs.get(key);
    if (p === undefined) {
      const forget = () => {
        if (this.hubs.get(key) === p) this.hubs.delete(key);
      };
      const hub = new Hub(this.store, type, filter, this.log, forget);
      p = hub.start().then(() => hub);
      this.hubs.set(key, p);
      p.catch(forget);
    }
    return p;
  }

  /** @internal */
  forget(client: FeedClient): void {
    this.clients.delete(client);
  }

  /** @internal */
  release(hub: Hub): void {
    if (hub.taps.size > 0) return;
    const key = `${hub.type} ${hub.filter}`;
    void this.hubs.get(key)?.then((h) => {
      if (h === hub && hub.taps.size === 0) {
        this.hubs.delete(key);
        hub.close();
      }
    });
  }

  /** Ends every client (telling it why) and every hub. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const c of [...this.clients]) c.drop("shutdown", "the gateway is stopping; reconnect with the last event id");
    const hubs = await Promise.allSettled([...this.hubs.values()]);
    this.hubs.clear();
    for (const h of hubs) if (h.status === "fulfilled") h.value.close();
  }
}

/** One connected client: its cursor, its taps on the hubs, its slow-client checks. */
export class FeedClient {
  readonly cursor: EventCursor;
  private done = false;
  private readonly cleanups: Array<() => void> = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly feeds: EventFeeds,
    private readonly filter: FeedFilter,
    cursor: EventCursor,
    private readonly sink: EventSink,
    private readonly log: Logger,
  ) {
    this.cursor = { ...cursor };
  }

  get id(): string {
    return formatEventId(this.cursor);
  }

  start(): void {
    this.sink.onClose(() => this.finish());
    const beat = setInterval(() => {
      if (this.sink.bufferedBytes() > this.feeds.tuning.maxBufferedBytes) return this.slow(`${this.sink.bufferedBytes()} bytes not taken`);
      this.sink.heartbeat();
    }, this.feeds.tuning.heartbeatMs);
    beat.unref();
    this.cleanups.push(() => clearInterval(beat));
    for (const type of this.filter.types) {
      this.follow(type).catch((err: unknown) => {
        if (this.done) return;
        this.log.warn({ err, type }, "event feed failed for a client");
        this.drop("feed_failed", `reading ${type} events failed: ${(err as Error).message}; reconnect with the last event id`);
      });
    }
  }

  /** Sends an event unless it is at or below the cursor; false if the client was dropped. */
  private emit(e: StoredEvent): boolean {
    if (this.done) return false;
    if (e.seq <= this.cursor[e.type]) return true;
    this.cursor[e.type] = e.seq;
    this.sink.send(this.id, e);
    if (this.sink.bufferedBytes() > this.feeds.tuning.maxBufferedBytes) {
      this.slow(`more than ${this.feeds.tuning.maxBufferedBytes} bytes not taken`);
      return false;
    }
    return true;
  }

  private async follow(type: EventType): Promise<void> {
    const hub = await this.feeds.hub(type, this.filter.scope);
    if (this.done) return this.feeds.release(hub);
    let queue: StoredEvent[] | undefined = [];
    const tap = (e: StoredEvent) => {
      if (queue === undefined) {
        this.emit(e);
      } else if (queue.push(e) > this.feeds.tuning.maxQueuedEvents) {
        queue = [];
        this.slow(`still catching up with ${this.feeds.tuning.maxQueuedEvents} new events waiting`);
      }
    };
    const failed = (reason: string) => this.drop("feed_failed", `${reason}; reconnect with the last event id`);
    // Attaching and reading the hub's position happen in one turn: every event past it reaches the tap.
    hub.taps.add(tap);
    hub.failed.add(failed);
    const joinedAt = hub.position;
    this.cleanups.push(() => {
      hub.taps.delete(tap);
      hub.failed.delete(failed);
      this.feeds.release(hub);
    });
    if (this.cursor[type] < joinedAt) {
      await this.feeds.store.readRange(
        type,
        hub.filter,
        this.cursor[type] + 1,
        joinedAt,
        async (e) => {
          if (!this.emit(e)) return false;
          if (this.sink.bufferedBytes() > Math.min(64 * 1024, this.feeds.tuning.maxBufferedBytes / 2)) await this.drainedOrStall();
          return !this.done;
        },
        { signal: this.abort.signal },
      );
      if (this.done) return;
      // Nothing of the filter left up to the hub's position: the cursor moves there.
      this.cursor[type] = Math.max(this.cursor[type], joinedAt);
    }
    const waiting = queue;
    queue = undefined;
    for (const e of waiting) if (!this.emit(e)) return;
  }

  private async drainedOrStall(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<"stalled">((r) => (timer = setTimeout(() => r("stalled"), this.feeds.tuning.stallMs)));
    const outcome = await Promise.race([this.sink.drained(), stalled]).finally(() => clearTimeout(timer));
    if (outcome === "stalled") this.slow(`took nothing for ${this.feeds.tuning.stallMs} ms`);
  }

  private slow(detail: string): void {
    if (this.done) return;
    this.log.warn({ filter: this.filter, id: this.id, detail, buffered: this.sink.bufferedBytes() }, "dropped a slow event client");
    this.drop("slow_client", `dropped: the client does not read fast enough (${detail}); reconnect with the last event id`);
  }

  drop(reason: EndReason["reason"], message: string): void {
    if (this.done) return;
    this.feeds.ended[reason]++;
    this.finish();
    this.sink.end({ reason, message });
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.feeds.forget(this);
    this.abort.abort();
    for (const fn of this.cleanups.splice(0)) fn();
  }
}
