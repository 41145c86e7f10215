// The soak's leak judge on made-up series: it must call a steady leak one,
// through noise, and not call a flat sawtooth one. No processes.

import { describe, expect, it } from "vitest";
import { judge, type Sample } from "../helpers/faults/judge.ts";

/** Deterministic noise: a sawtooth of `amplitude` with period 7 samples. */
function series(minutes: number, perMinute: number, slope: number, amplitude: number): Sample[] {
  return Array.from({ length: minutes * perMinute }, (_, i) => ({ t: i / perMinute, value: 100 + slope * (i / perMinute) + amplitude * ((i % 7) / 7 - 0.5) }));
}

describe("judge", () => {
  it("calls a steady leak one, through a sawtooth", () => {
    const v = judge("fds", series(3, 6, 12, 10), 1);
    expect(v.leaks).toBe(true);
    expect(v.slope).toBeCloseTo(12, 0);
  });

  it("does not call a flat sawtooth a leak", () => {
    expect(judge("fds", series(3, 6, 0, 10), 1).leaks).toBe(false);
  });

  it("does not call a slope below the threshold a leak", () => {
    expect(judge("fds", series(10, 6, 0.5, 0), 1).leaks).toBe(false);
  });

  it("does not call a slope lost in the noise a leak", () => {
    // Two points of growth over a short run with a large jump: slope above the threshold, not above its error.
    const noisy: Sample[] = [0, 100, 0, 100, 0, 100, 0, 130].map((value, i) => ({ t: i / 6, value }));
    const v = judge("rss", noisy, 1);
    expect(v.slope).toBeGreaterThan(1);
    expect(v.leaks).toBe(false);
  });

  it("needs three samples to judge", () => {
    expect(judge("x", [{ t: 0, value: 1 }, { t: 1, value: 100 }], 1).leaks).toBe(false);
  });
});
