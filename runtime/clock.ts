/**
 * Time, injected. Everything that decides by time (placement's stagger and
 * cooldowns, lease fencing, supervision backoff, relay claims, the event
 * publisher's pauses, the camera's viewer timers) reads it through a Clock,
 * so its decisions can be tested by advancing a ManualClock instead of
 * sleeping. The real clock is the default everywhere.
 */

/** An opaque timer handle, as returned by Clock.setTimeout. */
export type Timer = { readonly [timerBrand]: true };
declare const timerBrand: unique symbol;

export interface Clock {
  /** Monotonic milliseconds (an arbitrary origin): for deadlines and durations. */
  now(): number;
  /** Milliseconds since the Unix epoch: for timestamps that go on the wire, never for deciding. */
  wallNow(): number;
  /** Calls `fn` once after `ms`. A real timer does not keep the process alive. */
  setTimeout(fn: () => void, ms: number): Timer;
  /** Cancels a timer; undefined and timers that already fired are fine. */
  clearTimeout(timer: Timer | undefined): void;
}

/** performance.now(), Date.now() and Node's timers (unref'd). */
export const realClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return t as unknown as Timer;
  },
  clearTimeout(timer) {
    if (timer !== undefined) clearTimeout(timer as unknown as NodeJS.Timeout);
  },
};

/** Resolves after `ms` on `clock`, or rejects with the signal's reason once it aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A clock that moves only when told to: `advance(ms)` runs, in time order,
 * every timer due by then (including timers those timers set). For tests.
 */
export class ManualClock implements Clock {
  #now: number;
  #wallOffset: number;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  /** `start`: the monotonic reading at creation; `wallStart`: the wall-clock reading then. */
  constructor(start = 0, wallStart = Date.UTC(2026, 0, 1)) {
    this.#now = start;
    this.#wallOffset = wallStart - start;
  }

  now(): number {
    return this.#now;
  }

  wallNow(): number {
    return this.#now + this.#wallOffset;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id as unknown as Timer;
  }

  clearTimeout(timer: Timer | undefined): void {
    if (timer !== undefined) this.#timers.delete(timer as unknown as number);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, firing due timers in order (ties in the order they were set). */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (entry[1].at <= until && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].at;
      next[1].fn();
    }
    this.#now = until;
  }
}

/** A repeating timer: stop() cancels it for good. */
export interface Repeating {
  stop(): void;
}

/**
 * Calls `fn` every `ms` on `clock` until stopped. Each run arms the next one,
 * so a ManualClock's advance() runs it once per period it crosses.
 */
export function every(clock: Clock, ms: number, fn: () => void): Repeating {
  let stopped = false;
  let timer: Timer | undefined;
  const arm = () => {
    timer = clock.setTimeout(() => {
      if (stopped) return;
      arm();
      fn();
    }, ms);
  };
  arm();
  return {
    stop() {
      stopped = true;
      clock.clearTimeout(timer);
    },
  };
}
