// Waiting for a condition in tests: poll it against a deadline. Tests never sleep
// a fixed time hoping something has happened by then.

export interface WaitForOptions {
  /** Milliseconds before giving up. Default 5000. */
  timeoutMs?: number;
  /** Milliseconds between attempts. Default 50. */
  intervalMs?: number;
  /** What was awaited; leads the error message on timeout. */
  message?: string;
}

/** waitFor() ran out of time. `cause` is the last attempt's error, if it threw. */
export class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
  readonly timeoutMs: number;
  readonly attempts: number;

  constructor(message: string, timeoutMs: number, attempts: number, cause: unknown) {
    super(`${message}: not satisfied within ${timeoutMs} ms (${attempts} attempts)`, cause === undefined ? undefined : { cause });
    this.timeoutMs = timeoutMs;
    this.attempts = attempts;
  }
}

const pending = Symbol("pending");

/**
 * Calls `fn` until it returns something other than `false`, `null` or
 * `undefined`, and resolves with that value. A throw counts as "not yet" (the
 * last one becomes the timeout error's cause). An attempt still running at the
 * deadline is abandoned, so waitFor itself always settles on time.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: WaitForOptions = {},
): Promise<Exclude<T, false | null | undefined>> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let attempts = 0;
  for (;;) {
    attempts++;
    const attempt = Promise.resolve().then(fn);
    attempt.catch(() => {}); // an abandoned attempt may reject later; that is not an unhandled error
    const outcome = await raceDeadline(attempt, deadline).then(
      (value) => ({ value }),
      (err: unknown) => ({ err }),
    );
    if ("err" in outcome) {
      lastError = outcome.err;
    } else if (outcome.value !== pending && outcome.value !== false && outcome.value !== null && outcome.value !== undefined) {
      return outcome.value as Exclude<T, false | null | undefined>;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new WaitTimeoutError(opts.message ?? "condition", timeoutMs, attempts, lastError);
    await new Promise((res) => setTimeout(res, Math.min(intervalMs, left)));
  }
}

function raceDeadline<T>(p: Promise<T>, deadline: number): Promise<T | typeof pending> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<typeof pending>((res) => (timer = setTimeout(() => res(pending), Math.max(0, deadline - Date.now()))));
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}
