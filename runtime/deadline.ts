/**
 * The one way to race work against a timer. The timer is always cleared, so
 * none outlives the wait; work that loses the race is not cancelled (pass it
 * an AbortSignal for that) but its later rejection is observed.
 */
import { realClock, type Clock, type Timer } from "./clock.ts";

export const timedOut = Symbol("timedOut");

/** `p`'s value, or `timedOut` if `ms` pass first. */
export async function withTimeout<T>(p: Promise<T>, ms: number, clock: Clock = realClock): Promise<T | typeof timedOut> {
  let timer: Timer | undefined;
  p.catch(() => {}); // a loser's rejection is not an unhandled one
  try {
    return await Promise.race([p, new Promise<typeof timedOut>((res) => (timer = clock.setTimeout(() => res(timedOut), ms)))]);
  } finally {
    clock.clearTimeout(timer);
  }
}

/** Work that did not finish by its deadline. */
export class DeadlineError extends Error {
  override name = "DeadlineError";
  constructor(
    /** What was waited for, e.g. "KV update". */
    readonly what: string,
    readonly timeoutMs: number,
  ) {
    super(`${what}: no result within ${timeoutMs} ms`);
  }
}

/** `p`'s value, or a rejection with `onTimeout()` (default a DeadlineError naming `what`) if `ms` pass first. */
export async function withDeadline<T>(p: Promise<T>, ms: number, what: string, options: { clock?: Clock; onTimeout?: () => Error } = {}): Promise<T> {
  const result = await withTimeout(p, ms, options.clock);
  if (result === timedOut) throw options.onTimeout?.() ?? new DeadlineError(what, ms);
  return result;
}
