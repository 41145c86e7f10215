// The actor supervisor's restart backoff on a ManualClock: restarts come
// exactly when the policy says, not a moment sooner, and a long healthy run
// forgives earlier failures. No processes, no waiting.

import { describe, expect, it } from "vitest";
import { ActorSlot, ManualClock, silentLogger, type Actor, type ActorContext, type ActorKind, type BackoffPolicy, type StatusReport } from "../runtime/index.ts";
import { CameraSpecSchema } from "../subjects/index.ts";

const POLICY: BackoffPolicy = { initialMs: 500, maxMs: 4000, resetAfterMs: 60_000, jitter: "none" };

/** Lets the slot's promise chains run (no time passes on the ManualClock). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function harness(behaviour: (attempt: number) => "throw" | "run") {
  const clock = new ManualClock();
  let starts = 0;
  let fail: ((err: unknown) => void) | undefined;
  const reports: StatusReport[] = [];
  const actor: Actor = { update: () => undefined, stop: async () => undefined, status: () => ({}) as never };
  const kind: ActorKind = {
    name: "test",
    start: async () => {
      starts++;
      if (behaviour(starts) === "throw") throw new Error(`start ${starts} failed`);
      return actor;
    },
  };
  const slot = new ActorSlot({
    kind,
    spec: CameraSpecSchema.parse({ id: "cam", url: "rtsp://127.0.0.1/x" }),
    epoch: 1,
    node: "n1",
    logger: silentLogger(),
    backoff: POLICY,
    clock,
    context: (spec, f) => {
      fail = f;
      return { spec } as unknown as ActorContext;
    },
    report: (r) => reports.push(r),
  });
  return { clock, slot, reports, starts: () => starts, failRunning: (err: unknown) => fail?.(err) };
}

describe("ActorSlot restart backoff", () => {
  it("restarts a failing actor after 0.5, 1, 2, 4, 4 s, never sooner, and reports each delay", async () => {
    const h = harness(() => "throw");
    h.slot.start();
    await settle();
    expect(h.starts()).toBe(1);
    for (const [i, delay] of [500, 1000, 2000, 4000, 4000].entries()) {
      expect(h.reports.at(-1)?.error).toMatchObject({ code: "ACTOR_FAILED", attempt: i + 1, retry_in_ms: delay });
      h.clock.advance(delay - 1);
      await settle();
      expect(h.starts()).toBe(i + 1);
      h.clock.advance(1);
      await settle();
      expect(h.starts()).toBe(i + 2);
    }
    await h.slot.stop("shutdown");
    h.clock.advance(60_000);
    await settle();
    expect(h.starts()).toBe(6);
    expect(h.clock.pending).toBe(0);
  });

  it("a run longer than resetAfterMs starts the count again at attempt 1", async () => {
    const h = harness((n) => (n === 1 ? "throw" : "run"));
    h.slot.start();
    await settle();
    h.clock.advance(500);
    await settle();
    expect(h.starts()).toBe(2);
    // Fails again soon: attempt 2, twice the delay.
    h.clock.advance(1000);
    h.failRunning(new Error("crashed"));
    await settle();
    expect(h.reports.at(-1)?.error).toMatchObject({ attempt: 2, retry_in_ms: 1000 });
    h.clock.advance(1000);
    await settle();
    expect(h.starts()).toBe(3);
    // Healthy for a minute, then a failure: forgiven, back to the first delay.
    h.clock.advance(POLICY.resetAfterMs);
    h.failRunning(new Error("crashed later"));
    await settle();
    expect(h.reports.at(-1)?.error).toMatchObject({ attempt: 1, retry_in_ms: 500 });
    await h.slot.stop("shutdown");
  });
});
