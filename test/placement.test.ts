import { describe, expect, it } from "vitest";
import { fairShare, handoverCount, hashUnit, rankCandidates, rendezvousScore, type NodeLoad } from "../runtime/node/placement.ts";
import { backoffDelay } from "../runtime/backoff.ts";
import { DEFAULT_BACKOFF } from "../runtime/node/supervisor.ts";
import { leaseTiming } from "../runtime/node/leases.ts";

const nodes = (...spec: Array<[string, number, number]>): NodeLoad[] => spec.map(([node, capacity, count]) => ({ node, capacity, count }));
const cams = (n: number) => Array.from({ length: n }, (_, i) => `cam${i}`);

describe("rendezvous hashing", () => {
  it("hashes into (0, 1), deterministically", () => {
    for (const c of cams(200)) {
      const h = hashUnit(c, "n1");
      expect(h).toBeGreaterThan(0);
      expect(h).toBeLessThan(1);
      expect(hashUnit(c, "n1")).toBe(h);
    }
  });

  it("spreads cameras evenly over equal nodes", () => {
    const wins = new Map<string, number>();
    for (const c of cams(3000)) {
      const best = ["n1", "n2", "n3"].map((n) => ({ n, s: rendezvousScore(c, n, 10) })).sort((a, b) => b.s - a.s)[0]!.n;
      wins.set(best, (wins.get(best) ?? 0) + 1);
    }
    for (const n of ["n1", "n2", "n3"]) expect(wins.get(n)).toBeGreaterThan(900);
  });

  it("weights by free capacity: twice the room wins about twice as often", () => {
    let big = 0;
    for (const c of cams(3000)) if (rendezvousScore(c, "big", 20) > rendezvousScore(c, "small", 10)) big++;
    expect(big / 3000).toBeGreaterThan(0.6);
    expect(big / 3000).toBeLessThan(0.73);
  });

  it("moves only the cameras of a node that leaves", () => {
    const best = (c: string, ns: string[]) => ns.map((n) => ({ n, s: rendezvousScore(c, n, 1) })).sort((a, b) => b.s - a.s)[0]!.n;
    for (const c of cams(500)) {
      const before = best(c, ["n1", "n2", "n3"]);
      if (before !== "n3") expect(best(c, ["n1", "n2"])).toBe(before);
    }
  });
});

describe("fair share", () => {
  it("splits evenly into floor and ceil", () => {
    const s = fairShare(30, nodes(["a", 32, 0], ["b", 32, 0], ["c", 32, 0], ["d", 32, 0]));
    expect([...s.values()]).toEqual(Array(4).fill({ floor: 7, ceil: 8 }));
  });

  it("gives small nodes all they can and shares the rest", () => {
    const s = fairShare(30, nodes(["small", 4, 0], ["b", 32, 0], ["c", 32, 0]));
    expect(s.get("small")).toEqual({ floor: 4, ceil: 4 });
    expect(s.get("b")).toEqual({ floor: 13, ceil: 13 });
  });

  it("never above capacity when cameras outnumber it", () => {
    const s = fairShare(100, nodes(["a", 10, 0], ["b", 20, 0]));
    expect(s.get("a")).toEqual({ floor: 10, ceil: 10 });
    expect(s.get("b")).toEqual({ floor: 20, ceil: 20 });
  });
});

describe("candidates and hand-over", () => {
  it("ranks only nodes below their ceiling and capacity", () => {
    const loads = nodes(["a", 32, 14], ["b", 32, 13], ["c", 2, 2]); // shares: c 2, a and b 14
    const shares = fairShare(30, loads);
    const ranked = rankCandidates("cam1", loads, shares);
    expect(ranked).toEqual(["b"]);
  });

  it("the most loaded node hands one over while someone is below its floor", () => {
    const loads = nodes(["a", 32, 8], ["b", 32, 8], ["c", 32, 8], ["d", 32, 6]);
    const shares = fairShare(30, loads); // 7..8
    expect(handoverCount("a", loads, shares)).toBe(1); // ties: lowest id donates
    expect(handoverCount("b", loads, shares)).toBe(0);
    expect(handoverCount("d", loads, shares)).toBe(0);
  });

  it("a node above its ceiling hands over the excess; a balanced fleet does nothing", () => {
    const joined = nodes(["a", 32, 10], ["b", 32, 10], ["c", 32, 10], ["new", 32, 0]);
    const shares = fairShare(30, joined);
    expect(handoverCount("a", joined, shares)).toBe(2);
    const even = nodes(["a", 32, 8], ["b", 32, 8], ["c", 32, 7], ["d", 32, 7]);
    for (const n of ["a", "b", "c", "d"]) expect(handoverCount(n, even, fairShare(30, even))).toBe(0);
  });
});

describe("timing", () => {
  it("lease timing: fence at TTL/2, fast takeover a tenth of the TTL past it, the post-election hold a tenth of the TTL inside a full one", () => {
    expect(leaseTiming(3000)).toEqual({ renewEveryMs: 500, fenceAfterMs: 1500, fastTakeoverAfterMs: 1800, takeoverAfterMs: 3000, postElectionHoldMs: 2700 });
  });

  it("restart backoff doubles with jitter up to the cap", () => {
    expect(backoffDelay(DEFAULT_BACKOFF, 1, () => 0)).toBe(250);
    expect(backoffDelay(DEFAULT_BACKOFF, 1, () => 1)).toBe(500);
    expect(backoffDelay(DEFAULT_BACKOFF, 3, () => 1)).toBe(2000);
    expect(backoffDelay(DEFAULT_BACKOFF, 30, () => 1)).toBe(30_000);
  });
});
