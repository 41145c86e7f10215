/**
 * The one backoff formula: exponential from `initialMs`, capped at `maxMs`,
 * with "equal jitter" (the delay is d/2 plus a random half of d), so a fleet
 * that failed together does not retry together, and no retry comes sooner
 * than half the nominal delay.
 */

export interface Backoff {
  /** Delay before the first retry (attempt 1) before jitter, ms. */
  initialMs: number;
  /** Longest delay before jitter, ms. */
  maxMs: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Whether to jitter: "equal" (default) spreads the delay over [d/2, d]; "none" returns d. */
  jitter?: "equal" | "none";
}

/** The nominal delay before retry number `attempt` (1 for the first), capped, without jitter. */
export function nominalDelay(policy: Backoff, attempt: number): number {
  const factor = policy.factor ?? 2;
  return Math.min(policy.maxMs, policy.initialMs * factor ** Math.max(0, attempt - 1));
}

/** The delay before retry number `attempt` (1 for the first), ms. `random` in [0, 1) is injectable for tests. */
export function backoffDelay(policy: Backoff, attempt: number, random: () => number = Math.random): number {
  const d = nominalDelay(policy, attempt);
  return (policy.jitter ?? "equal") === "none" ? d : equalJitter(d, random);
}

/** `d/2 + random·d/2`: for delays computed some other way (e.g. from how long an outage has lasted). */
export function equalJitter(delayMs: number, random: () => number = Math.random): number {
  return delayMs / 2 + random() * (delayMs / 2);
}
