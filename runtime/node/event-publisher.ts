import type { JetStreamClient } from "@nats-io/jetstream";
import { Counter, Gauge, type Registry } from "prom-client";
import type { Logger } from "../logger.ts";
import { isTransientNatsError } from "../infra/index.ts";

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
}

interface Item {
  subject: string;
  data: Uint8Array;
  msgId: string;
  refusals: number;
}

export type PublishOutcome = "queued" | "overflow";

export class BufferedPublisher {
  readonly #o: Required<Omit<BufferedPublisherOptions, "registry" | "metricPrefix">>;
  /** Waiting items are #queue[#head..]; a head index, because shift() on a long array copies it. */
  #queue: Item[] = [];
  #head = 0;
  #inFlight = 0;
  #pausedUntil = 0;
  #retryTimer?: NodeJS.Timeout;
  #backoffMs = 0;
  #stopped = false;
  #lastOverflowLog = 0;
  #overflowSinceLog = 0;
  readonly #idle = new Set<() => void>();
  readonly #metrics?: { dropped: Counter; retried: Counter; failed: Counter; buffered: Gauge };
  readonly stats = { published: 0, duplicates: 0, retried: 0, dropped: 0, failed: 0 };

  constructor(options: BufferedPublisherOptions) {
    this.#o = { window: 512, ackTimeoutMs: 5000, maxRefusals: 3, ...options };
    if (!Number.isInteger(this.#o.capacity) || this.#o.capacity < 1) throw new RangeError(`BufferedPublisherOptions.capacity must be a positive integer, got ${this.#o.capacity}`);
    const registry = options.registry;
    const prefix = options.metricPrefix ?? "camfleet_events";
    if (registry !== undefined) {
      this.#metrics = {
        dropped: new Counter({ name: `${prefix}_dropped_total`, help: "Events dropped because the publish buffer was full (NATS away too long)", registers: [registry] }),
        retried: new Counter({ name: `${prefix}_publish_retries_total`, help: "Publishes sent again with the same Nats-Msg-Id after a failed attempt", registers: [registry] }),
        failed: new Counter({ name: `${prefix}_publish_failed_total`, help: "Events JetStream refused for good (e.g. no stream for the subject)", registers: [registry] }),
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

  /** Queues one event; "overflow" when the buffer is full (the event is dropped and counted). */
  publish(subject: string, data: Uint8Array | string, msgId: string): PublishOutcome {
    if (this.#stopped || this.pending >= this.#o.capacity) {
      this.stats.dropped++;
      this.#metrics?.dropped.inc();
      this.#logOverflow();
      return "overflow";
    }
    this.#queue.push({ subject, data: typeof data === "string" ? Buffer.from(data) : data, msgId, refusals: 0 });
    if (this.#inFlight < this.#o.window) this.#pump();
    return "queued";
  }

  /** Resolves true once every queued event is acknowledged, false if `timeoutMs` passes first. */
  flush(timeoutMs: number): Promise<boolean> {
    if (this.pending === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.#idle.delete(onIdle);
        resolve(ok);
      };
      const onIdle = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.#idle.add(onIdle);
    });
  }

  /** Stops sending; what is still queued is given up (and reported by the caller through `pending`). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
  }

  #pump(): void {
    if (this.#stopped) return;
    const now = performance.now();
    if (now < this.#pausedUntil) {
      this.#retryTimer ??= setTimeout(() => {
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
      this.#inFlight++;
      this.#o.js.publish(item.subject, item.data, { msgID: item.msgId, timeout: this.#o.ackTimeoutMs }).then(
        (ack) => {
          this.#inFlight--;
          this.#backoffMs = 0;
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
            this.#backoffMs = Math.min(2000, Math.max(100, this.#backoffMs * 2));
            this.#pausedUntil = performance.now() + this.#backoffMs;
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
    const now = performance.now();
    if (this.#lastOverflowLog !== 0 && now - this.#lastOverflowLog < 10_000) return;
    this.#o.logger.warn({ dropped: this.#overflowSinceLog, capacity: this.#o.capacity }, "publish buffer full: events dropped while NATS is away");
    this.#lastOverflowLog = now;
    this.#overflowSinceLog = 0;
  }
}
