import type { JetStreamClient } from "@nats-io/jetstream";
import { Counter, Gauge, type Registry } from "prom-client";
import { backoffDelay, type Backoff } from "../backoff.ts";
import { realClock, type Clock, type Timer } from "../clock.ts";
import { withTimeout, timedOut } from "../deadline.ts";
import type { Logger } from "../logger.ts";
import { isTransientNatsError } from "../infra/index.ts";

/**
 * Pause after consecutive failed attempts: 0.1 s doubling to 2 s, reset by
 * any ack. No jitter: every failure of a burst pushes the same pause further,
 * and one node's buffer is no thundering herd.
 */
const RETRY_BACKOFF: Backoff = { initialMs: 100, maxMs: 2000, jitter: "none" };

/**
 * Asynchronous JetStream publishing with a bounded buffer, for events that
 * must not be lost while NATS is briefly away (detections). Up to `window`
 * publishes await their ack at once; one that fails for a transient reason
 * (timeout, no responders, lost connection) goes back to the front of the
 * queue and is sent again with the same Nats-Msg-Id, so JetStream keeps one
 * copy however often it was tried. Everything within `capacity` is kept
 * until acknowledged; an event offered while the buffer is full is dropped
 * at once, counted and reported, never queued without bound.
 */

export interface BufferedPublisherOptions {
  js: JetStreamClient;
  /** Events held at most, waiting or awaiting their ack. */
  capacity: number;
  /** Publishes awaiting their ack at once. Default 512. */
  window?: number;
  /** How long one attempt waits for its ack, ms. Default 5000. */
  ackTimeoutMs?: number;
  /** Attempts for a publish JetStream refuses for good (not a transient failure). Default 3. */
  maxRefusals?: number;
  logger: Logger;
  registry?: Registry;
  /** Metric name prefix, e.g. "camfleet_detections". */
  metricPrefix?: string;
  clock?: Clock;
}

interface Item {
  subject: string;
  data: Uint8Array;
  msgId: string;
  refusals: number;
  /** Asked before every attempt: false drops the event (its publisher may no longer speak for it, e.g. it fenced itself). */
  stillValid?: () => boolean;
}

export type PublishOutcome = "queued" | "overflow";

export class BufferedPublisher {
  readonly #o: Required<Omit<BufferedPublisherOptions, "registry" | "metricPrefix" | "clock">>;
  readonly #clock: Clock;
  /** Waiting items are #queue[#head..]; a head index, because shift() on a long array copies it. */
  #queue: Item[] = [];
  #head = 0;
  #inFlight = 0;
  #pausedUntil = 0;
  #retryTimer?: Timer;
  /** Failed attempts since the last ack. */
  #failures = 0;
  #stopped = false;
  #lastOverflowLog: number | undefined;
  #overflowSinceLog = 0;
  readonly #idle = new Set<() => void>();
  readonly #metrics?: { dropped: Counter; retried: Counter; failed: Counter; fenced: Counter; buffered: Gauge };
  readonly stats = { published: 0, duplicates: 0, retried: 0, dropped: 0, failed: 0, fenced: 0 };

  constructor(options: BufferedPublisherOptions) {
    const { clock, registry: _registry, metricPrefix: _prefix, ...rest } = options;
    this.#o = { window: 512, ackTimeoutMs: 5000, maxRefusals: 3, ...rest };
    this.#clock = clock ?? realClock;
    if (!Number.isInteger(this.#o.capacity) || this.#o.capacity < 1) throw new RangeError(`BufferedPublisherOptions.capacity must be a positive integer, got ${this.#o.capacity}`);
    const registry = options.registry;
    const prefix = options.metricPrefix ?? "camfleet_events";
    if (registry !== undefined) {
      this.#metrics = {
        dropped: new Counter({ name: `${prefix}_dropped_total`, help: "Events dropped because the publish buffer was full (NATS away too long)", registers: [registry] }),
        retried: new Counter({ name: `${prefix}_publish_retries_total`, help: "Publishes sent again with the same Nats-Msg-Id after a failed attempt", registers: [registry] }),
        failed: new Counter({ name: `${prefix}_publish_failed_total`, help: "Events JetStream refused for good (e.g. no stream for the subject)", registers: [registry] }),
        fenced: new Counter({ name: `${prefix}_fenced_total`, help: "Buffered events given up unsent because their node no longer held the camera's lease", registers: [registry] }),
        buffered: new Gauge({
          name: `${prefix}_buffered`,
          help: "Events waiting for or awaiting a JetStream ack",
          registers: [registry],
          // Read when scraped, not set per event: this sits on the hot path.
          collect: () => this.#metrics?.buffered.set(this.pending),
        }),
      };
    }
  }

  /** Events not yet acknowledged. */
  get pending(): number {
    return this.#queue.length - this.#head + this.#inFlight;
  }

  /**
   * Queues one event; "overflow" when the buffer is full (the event is dropped
   * and counted). `stillValid` is asked before each attempt: an event whose
   * sender lost the right to speak meanwhile (a fenced node) is dropped and
   * counted, never sent late.
   */
  publish(subject: string, data: Uint8Array | string, msgId: string, stillValid?: () => boolean): PublishOutcome {
    if (this.#stopped || this.pending >= this.#o.capacity) {
      this.stats.dropped++;
      this.#metrics?.dropped.inc();
      this.#logOverflow();
      return "overflow";
    }
    this.#queue.push({ subject, data: typeof data === "string" ? Buffer.from(data) : data, msgId, refusals: 0, ...(stillValid !== undefined ? { stillValid } : {}) });
    if (this.#inFlight < this.#o.window) this.#pump();
    return "queued";
  }

  /** Resolves true once every queued event is acknowledged, false if `timeoutMs` passes first. */
  async flush(timeoutMs: number): Promise<boolean> {
    if (this.pending === 0) return true;
    let onIdle!: () => void;
    const idle = new Promise<void>((resolve) => {
      onIdle = resolve;
      this.#idle.add(onIdle);
    });
    try {
      return (await withTimeout(idle, timeoutMs, this.#clock)) !== timedOut;
    } finally {
      this.#idle.delete(onIdle);
    }
  }

  /** Stops sending; what is still queued is given up (and reported by the caller through `pending`). */
  stop(): void {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#retryTimer);
  }

  #pump(): void {
    if (this.#stopped) return;
    const now = this.#clock.now();
    if (now < this.#pausedUntil) {
      this.#retryTimer ??= this.#clock.setTimeout(() => {
        this.#retryTimer = undefined;
        this.#pump();
      }, this.#pausedUntil - now);
      return;
    }
    while (this.#inFlight < this.#o.window && this.#head < this.#queue.length) {
      const item = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Item; // let it be collected
      if (this.#head === this.#queue.length) {
        this.#queue = [];
        this.#head = 0;
      } else if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      if (item.stillValid !== undefined && !item.stillValid()) {
        this.stats.fenced++;
        this.#metrics?.fenced.inc();
        if (this.pending === 0) for (const fn of [...this.#idle]) fn();
        continue;
      }
      this.#inFlight++;
      this.#o.js.publish(item.subject, item.data, { msgID: item.msgId, timeout: this.#o.ackTimeoutMs }).then(
        (ack) => {
          this.#inFlight--;
          this.#failures = 0;
          this.stats.published++;
          if (ack.duplicate) this.stats.duplicates++;
          this.#settled();
        },
        (err: unknown) => {
          this.#inFlight--;
          if (!isTransientNatsError(err) && ++item.refusals >= this.#o.maxRefusals) {
            this.stats.failed++;
            this.#metrics?.failed.inc();
            this.#o.logger.error({ err, subject: item.subject, msgId: item.msgId }, "JetStream refused an event; giving it up");
          } else {
            // Same msg id again: if the first attempt was stored after all, JetStream drops the copy.
            this.stats.retried++;
            this.#metrics?.retried.inc();
            if (this.#head > 0) this.#queue[--this.#head] = item;
            else this.#queue.unshift(item);
            this.#pausedUntil = this.#clock.now() + backoffDelay(RETRY_BACKOFF, ++this.#failures);
          }
          this.#settled();
        },
      );
    }
  }

  #settled(): void {
    if (this.pending === 0) for (const fn of [...this.#idle]) fn();
    this.#pump();
  }

  /** One line when overflow starts, then at most one every 10 s with the count since. */
  #logOverflow(): void {
    this.#overflowSinceLog++;
    const now = this.#clock.now();
    if (this.#lastOverflowLog !== undefined && now - this.#lastOverflowLog < 10_000) return;
    this.#o.logger.warn({ dropped: this.#overflowSinceLog, capacity: this.#o.capacity }, "publish buffer full: events dropped while NATS is away");
    this.#lastOverflowLog = now;
    this.#overflowSinceLog = 0;
  }
}
