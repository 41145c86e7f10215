// The reconcile round as a pure function: placement decisions from a
// snapshot and a time, no processes and no waiting. Times are monotonic ms
// passed in; a small simulator applies decisions to a shared view so that
// rounds of several nodes can be played against each other.

import { describe, expect, it } from "vitest";
import { CameraSpecSchema, type CameraSpec, type Lease, type NodeInfo } from "../subjects/index.ts";
import {
  DEFAULT_PLACEMENT,
  initialMemory,
  leaseTiming,
  reconcile,
  type ClusterSnapshot,
  type PlacementMemory,
  type ReconcileDecision,
} from "../runtime/index.ts";

const TTL = 3000;
const TIMING = leaseTiming(TTL);
const TUNING = DEFAULT_PLACEMENT;

interface Observed<T> {
  value: T;
  revision: number;
  observedAt: number;
}

/** The three buckets as every node sees them (one shared view: watch delays are not what these tests are about). */
class World {
  readonly cameras = new Map<string, Observed<CameraSpec>>();
  readonly leases = new Map<string, Observed<Lease>>();
  readonly nodes = new Map<string, Observed<NodeInfo>>();
  #revision = 0;

  camera(id: string, enabled = true, at = 0): this {
    this.cameras.set(id, { value: CameraSpecSchema.parse({ id, url: `rtsp://127.0.0.1/sim/${id}`, enabled }), revision: ++this.#revision, observedAt: at });
    return this;
  }

  node(id: string, at: number, extra: Partial<NodeInfo> = {}): this {
    const value: NodeInfo = { node: id, version: "test", started_ts: 0, heartbeat_ts: at, capacity: 32, cameras: 0, ...extra };
    this.nodes.set(id, { value, revision: ++this.#revision, observedAt: at });
    return this;
  }

  /** A write to a camera's lease (a claim or a renewal), seen at `at`. Resolves with its revision. */
  lease(camera: string, node: string, at: number): number {
    const revision = ++this.#revision;
    const epoch = this.leases.get(camera)?.value.node === node ? this.leases.get(camera)!.value.epoch : revision;
    this.leases.set(camera, { value: { camera, node, epoch, acquired_ts: at, renewed_ts: at }, revision, observedAt: at });
    return revision;
  }

  snapshot(connectedAt = 0): ClusterSnapshot {
    return { cameras: this.cameras, leases: this.leases, nodes: this.nodes, connectedAt, ttlMs: TTL };
  }
}

/** One node's side of the rounds: what it runs, what it remembers, and what it decided. */
class SimNode {
  readonly owned = new Map<string, number>();
  memory: PlacementMemory;
  draining = false;
  connectedAt = 0;
  readonly log: Array<{ at: number; claims: string[]; takeovers: string[]; handovers: string[] }> = [];

  constructor(
    readonly id: string,
    readonly world: World,
    readonly capacity = 32,
    at = 0,
    readonly score?: (camera: string, node: string, weight: number) => number,
  ) {
    this.memory = initialMemory(at);
  }

  /** One round at `now`; claims succeed at once unless `apply` is false. */
  round(now: number, apply = true): ReconcileDecision {
    const d = reconcile({
      view: this.world.snapshot(this.connectedAt),
      self: { id: this.id, capacity: this.capacity, draining: this.draining, owned: this.owned, claiming: new Set() },
      memory: this.memory,
      tuning: TUNING,
      now,
      ...(this.score !== undefined ? { score: this.score } : {}),
    });
    this.memory = d.memory;
    this.log.push({
      at: now,
      claims: d.claims.map((c) => c.camera),
      takeovers: d.claims.filter((c) => c.takeoverRevision !== undefined).map((c) => c.camera),
      handovers: d.handovers,
    });
    if (!apply) return d;
    for (const { camera } of d.claims) {
      this.world.lease(camera, this.id, now);
      this.owned.set(camera, this.world.cameras.get(camera)!.revision);
    }
    for (const camera of [...d.handovers, ...d.releases.map((r) => r.camera)]) {
      this.owned.delete(camera);
      this.world.leases.delete(camera);
    }
    return d;
  }

  /** Its heartbeat and its leases' renewals, seen at `now`. */
  renew(now: number): void {
    this.world.node(this.id, now, { capacity: this.capacity, cameras: this.owned.size, ...(this.draining ? { draining: true } : {}) });
    for (const camera of this.owned.keys()) this.world.lease(camera, this.id, now);
  }

  claimedAt(camera: string): number | undefined {
    return this.log.find((r) => r.claims.includes(camera))?.at;
  }
}

/**
 * Plays rounds of `nodes` from `from` to `until`: each step every live node
 * renews (every TTL/4) and runs a round; the next step is the earliest wake any
 * node asked for, or the next renewal.
 */
function play(nodes: readonly SimNode[], from: number, until: number, alive: (n: SimNode) => boolean = () => true): number {
  let now = from;
  let nextRenewal = from;
  while (now <= until) {
    if (now >= nextRenewal) {
      for (const n of nodes) if (alive(n)) n.renew(now);
      nextRenewal = now + TIMING.renewEveryMs;
    }
    let next = nextRenewal;
    for (const n of nodes) {
      if (!alive(n)) continue;
      const d = n.round(now);
      if (d.wakeAt !== undefined) next = Math.min(next, d.wakeAt);
    }
    now = Math.max(now + 1, next);
  }
  return now;
}

function ownersOf(world: World): Map<string, number> {
  const counts = new Map<string, number>();
  for (const l of world.leases.values()) counts.set(l.value.node, (counts.get(l.value.node) ?? 0) + 1);
  return counts;
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `cam${String(i + 1).padStart(2, "0")}`);

describe("reconcile: claims", () => {
  it("places unowned cameras on their best homes at once, each on exactly one node, evenly", () => {
    const world = new World();
    for (const c of ids(30)) world.camera(c);
    const nodes = ["a", "b", "c"].map((id) => new SimNode(id, world));
    play(nodes, 0, 5000);
    expect([...world.leases.keys()].sort()).toEqual(ids(30));
    for (const [, count] of ownersOf(world)) expect(count).toBe(10);
    // Rank 0 of every camera claims in the first round: no stagger wait for anyone.
    const firstRound = nodes.flatMap((n) => n.log.filter((r) => r.at === 0).flatMap((r) => r.claims));
    expect(firstRound.length).toBeGreaterThan(0);
    expect(new Set(firstRound).size).toBe(firstRound.length);
  });

  it("a dead owner's camera is claimed only after a full TTL without a change, by rank 0 first, then rank 1 a stagger later", () => {
    const world = new World().camera("cam1");
    world.node("dead", 0);
    world.lease("cam1", "dead", 0);
    const a = new SimNode("a", world);
    const b = new SimNode("b", world);
    a.renew(0);
    b.renew(0);

    // Until the lease is a full TTL old nobody claims, and the round says when to look again: at the expiry.
    for (const t of [0, 1000, 2999]) {
      a.renew(t);
      b.renew(t);
      for (const n of [a, b]) {
        const d = n.round(t, false);
        expect(d.claims).toEqual([]);
        expect(d.wakeAt).toBeLessThanOrEqual(TTL);
      }
    }
    const da = a.round(TTL, false);
    const db = b.round(TTL, false);
    const [second, dFirst, dSecond] = da.claims.length > 0 ? [b, da, db] : [a, db, da];
    expect(dFirst.claims).toEqual([
      { camera: "cam1", takeoverRevision: world.leases.get("cam1")!.revision, leaseAgeMs: TTL, expiry: { lifetimeMs: TTL, holderGone: false, agesRestartedAgoMs: TTL } },
    ]);
    expect(dSecond.claims).toEqual([]);
    expect(dSecond.wakeAt).toBe(TTL + TUNING.claimStaggerMs);
    // Rank 0 failed to claim (it died too): rank 1 takes over one stagger later, not before.
    expect(second.round(TTL + TUNING.claimStaggerMs - 1, false).claims).toEqual([]);
    expect(second.round(TTL + TUNING.claimStaggerMs, false).claims.map((c) => c.camera)).toEqual(["cam1"]);
  });

  it("a stagger tie (equal scores everywhere) has one deterministic winner: the lower node id", () => {
    const flat = () => 1;
    for (const order of [["b", "a"], ["a", "b"]]) {
      const world = new World().camera("cam1");
      const nodes = order.map((id) => new SimNode(id, world, 32, 0, flat));
      for (const n of nodes) n.renew(0);
      const decisions = new Map(nodes.map((n) => [n.id, n.round(0, false)]));
      expect(decisions.get("a")!.claims.map((c) => c.camera)).toEqual(["cam1"]);
      expect(decisions.get("b")!.claims).toEqual([]);
      expect(decisions.get("b")!.wakeAt).toBe(TUNING.claimStaggerMs);
      // The winner's lease shows up before the loser's turn: the loser never claims.
      world.lease("cam1", "a", 20);
      const b = nodes.find((n) => n.id === "b")!;
      expect(b.round(TUNING.claimStaggerMs, false).claims).toEqual([]);
      expect(b.round(TTL, false).claims).toEqual([]);
    }
  });

  it("never above MAX_CAMERAS, however many cameras are unowned", () => {
    const world = new World();
    for (const c of ids(10)) world.camera(c);
    const small = new SimNode("small", world, 3);
    small.renew(0);
    expect(small.round(0).claims).toHaveLength(3);
    small.renew(100);
    expect(small.round(100).claims).toEqual([]);
    expect(small.round(10_000).claims).toEqual([]);
    expect(small.owned.size).toBe(3);
    // A roomier node that joins takes the rest, and the small one stays at its cap.
    const big = new SimNode("big", world, 32, 10_000);
    play([small, big], 10_000, 20_000);
    expect(ownersOf(world)).toEqual(new Map([["small", 3], ["big", 7]]));
  });

  it("claims in flight count against maxClaimsInFlight", () => {
    const world = new World();
    for (const c of ids(100)) world.camera(c);
    world.node("a", 0);
    const d = reconcile({
      view: world.snapshot(),
      self: { id: "a", capacity: 200, draining: false, owned: new Map(), claiming: new Set(["cam01", "cam02"]) },
      memory: initialMemory(0),
      tuning: TUNING,
      now: 0,
    });
    expect(d.claims).toHaveLength(TUNING.maxClaimsInFlight - 2);
    expect(d.claims.map((c) => c.camera)).not.toContain("cam01");
  });
});

describe("reconcile: a partitioned owner", () => {
  it("while its lease keeps changing in this node's view, nobody claims; once it stops, not before the owner has fenced itself", () => {
    const world = new World().camera("cam1");
    const owner = new SimNode("x", world);
    owner.renew(0);
    expect(owner.round(0).claims).toEqual(["cam1"].map((camera) => ({ camera, takeoverRevision: undefined })));
    const a = new SimNode("a", world);
    const b = new SimNode("b", world);
    // x is cut off from the others' server but its renewals still land: the others see them change.
    play([owner, a, b], 1, 20_000);
    expect(a.claimedAt("cam1")).toBeUndefined();
    expect(b.claimedAt("cam1")).toBeUndefined();

    // Now its renewals stop reaching KV. Its last renewal was sent no later than seen.
    const lastSeen = world.leases.get("cam1")!.observedAt;
    const fencedBy = lastSeen + TIMING.fenceAfterMs;
    play([owner, a, b], 20_001, 30_000, (n) => n !== owner);
    const claimedAt = Math.min(a.claimedAt("cam1") ?? Infinity, b.claimedAt("cam1") ?? Infinity);
    expect(claimedAt).toBeLessThan(Infinity);
    expect(claimedAt).toBeGreaterThanOrEqual(lastSeen + TTL);
    // The quarter TTL of margin: the holder's fence falls well before the first claim.
    expect(claimedAt - fencedBy).toBeGreaterThanOrEqual(TTL / 4);
  });

  it("a node that was cut off itself judges nobody by the gap: ages start again at its reconnect", () => {
    const world = new World().camera("cam1");
    world.node("x", 0);
    world.lease("cam1", "x", 0);
    const a = new SimNode("a", world);
    a.connectedAt = 2500; // a reconnected just before x's lease would have looked expired
    a.renew(2500);
    expect(a.round(TTL, false).claims).toEqual([]);
    expect(a.round(2500 + TTL - 1, false).claims).toEqual([]);
    expect(a.round(2500 + TTL, false).claims.map((c) => c.camera)).toEqual(["cam1"]);
  });
});

describe("reconcile: hand-overs", () => {
  it("a node that joins gets cameras handed over down to the fair share, only after membership settled, by create not takeover", () => {
    const world = new World();
    for (const c of ids(30)) world.camera(c);
    const old = ["a", "b", "c"].map((id) => new SimNode(id, world));
    play(old, 0, 5000);
    const joinedAt = 10_000;
    const d = new SimNode("d", world, 32, joinedAt);
    const all = [...old, d];
    play(all, joinedAt, joinedAt + 20_000);

    const counts = ownersOf(world);
    expect([...counts.keys()].sort()).toEqual(["a", "b", "c", "d"]);
    for (const n of all) expect([7, 8]).toContain(counts.get(n.id));
    expect([...world.leases.keys()].sort()).toEqual(ids(30));
    const handovers = old.flatMap((n) => n.log.filter((r) => r.handovers.length > 0));
    expect(handovers.length).toBeGreaterThan(0);
    for (const h of handovers) expect(h.at).toBeGreaterThanOrEqual(joinedAt + TUNING.settleMs);
    // Handed-over leases are deleted, so the newcomer claims with create; and it never grabs.
    expect(d.log.flatMap((r) => r.takeovers)).toEqual([]);
    expect(d.log.flatMap((r) => r.handovers)).toEqual([]);
    // A node does not take back what it handed over within the cooldown.
    for (const n of old) {
      for (const h of n.log.filter((r) => r.handovers.length > 0)) {
        for (const camera of h.handovers) {
          const back = n.log.find((r) => r.at > h.at && r.claims.includes(camera));
          if (back !== undefined) expect(back.at).toBeGreaterThanOrEqual(h.at + TUNING.handoverCooldownMs);
        }
      }
    }
  });

  it("a draining node claims nothing; the others leave it out of the shares and take all its cameras", () => {
    const world = new World();
    for (const c of ids(30)) world.camera(c);
    const nodes = ["a", "b", "c"].map((id) => new SimNode(id, world));
    play(nodes, 0, 5000);
    const [drained, ...rest] = nodes as [SimNode, ...SimNode[]];
    drained.draining = true;
    drained.renew(6000); // its heartbeat says draining before its cameras come free (FleetNode.drain)
    for (const camera of drained.owned.keys()) world.leases.delete(camera);
    drained.owned.clear();
    const d = drained.round(6000);
    expect(d.claims).toEqual([]);
    play(nodes, 6000, 30_000);
    expect(drained.log.filter((r) => r.at >= 6000).flatMap((r) => r.claims)).toEqual([]);
    expect(ownersOf(world)).toEqual(new Map(rest.map((n) => [n.id, 15])));
  });

  it("a deleted or disabled camera is released; a changed spec is an update", () => {
    const world = new World().camera("keep").camera("gone").camera("off");
    const a = new SimNode("a", world);
    a.renew(0);
    a.round(0);
    expect([...a.owned.keys()].sort()).toEqual(["gone", "keep", "off"]);
    world.cameras.delete("gone");
    world.camera("off", false);
    world.camera("keep");
    const d = a.round(100, false);
    expect(d.releases).toEqual(expect.arrayContaining([{ camera: "gone", reason: "deleted" }, { camera: "off", reason: "disabled" }]));
    expect(d.updates).toEqual([{ camera: "keep", revision: world.cameras.get("keep")!.revision }]);
  });
});

describe("a node found gone by its presence probe", () => {
  // 6 cameras, 3 nodes, 2 each: b and c are at their fair ceiling, so while a
  // counts as live nobody but a may claim a's cameras.
  function world(): { w: World; aCams: string[]; self: (id: string, owned: string[]) => Parameters<typeof reconcile>[0]["self"] } {
    const w = new World();
    const cams = ["c0", "c1", "c2", "c3", "c4", "c5"];
    for (const c of cams) w.camera(c);
    for (const n of ["a", "b", "c"]) w.node(n, 0);
    cams.forEach((c, i) => w.lease(c, ["a", "b", "c"][i % 3]!, 0));
    const aCams = cams.filter((_, i) => i % 3 === 0);
    const self = (id: string, owned: string[]) => ({ id, capacity: 32, draining: false, owned: new Map(owned.map((c) => [c, 1])), claiming: new Set<string>() });
    return { w, aCams, self };
  }

  it("has its leases taken over after the fast expiry (past its own fence), not the TTL, and is no candidate meanwhile", () => {
    const { w, aCams, self } = world();
    const bOwned = [...w.leases.values()].filter((l) => l.value.node === "b").map((l) => l.value.camera);
    const run = (now: number, gone: boolean) =>
      reconcile({
        view: { ...w.snapshot(), ...(gone ? { gone: new Set(["a"]), fastTakeoverMs: TIMING.fastTakeoverAfterMs } : {}) },
        self: self("b", bOwned),
        memory: initialMemory(0),
        tuning: TUNING,
        now,
      });
    // Just before the fast expiry nothing moves, gone or not; the round wakes at the expiry.
    expect(run(TIMING.fastTakeoverAfterMs - 1, true).claims).toEqual([]);
    expect(run(TIMING.fastTakeoverAfterMs - 1, true).wakeAt).toBe(TIMING.fastTakeoverAfterMs);
    // At it, a gone holder's cameras are claimable (b ranks without a); a merely late one's are not.
    const fast = run(TIMING.fastTakeoverAfterMs + 2 * TUNING.claimStaggerMs, true).claims;
    const claims = fast.map((c) => c.camera).sort();
    expect(claims.length).toBeGreaterThan(0);
    // The claim says it went by the fast expiry, its holder being gone (the claim's log line).
    expect(fast.map((c) => c.expiry)).toEqual(fast.map(() => expect.objectContaining({ lifetimeMs: TIMING.fastTakeoverAfterMs, holderGone: true })));
    expect(claims.every((c) => aCams.includes(c))).toBe(true);
    expect(run(TIMING.fastTakeoverAfterMs + 2 * TUNING.claimStaggerMs, false).claims).toEqual([]);
    // The fast expiry never exceeds the TTL's verdict.
    expect(run(TTL + 2 * TUNING.claimStaggerMs, false).claims.length).toBeGreaterThan(0);
  });

  it("takes a gone holder's lease over only after the full TTL when it was last renewed before this node's ages restarted (an election)", () => {
    const { w, aCams, self } = world();
    const bOwned = [...w.leases.values()].filter((l) => l.value.node === "b").map((l) => l.value.camera);
    const restartedAt = 1000; // an election ended: a's leases, renewed at 0, may be held by proof past it
    // b and c renew after it; a (gone) does not.
    for (const l of [...w.leases.values()]) if (l.value.node !== "a") w.lease(l.value.camera, l.value.node, restartedAt + 500);
    const run = (now: number) =>
      reconcile({
        view: { ...w.snapshot(restartedAt), gone: new Set(["a"]), fastTakeoverMs: TIMING.fastTakeoverAfterMs },
        self: self("b", bOwned),
        memory: initialMemory(0),
        tuning: TUNING,
        now,
      });
    // Past the fast expiry counted from the restart, and short of the TTL: nothing moves.
    expect(run(restartedAt + TIMING.fastTakeoverAfterMs + 2 * TUNING.claimStaggerMs).claims).toEqual([]);
    expect(run(restartedAt + TIMING.fastTakeoverAfterMs).wakeAt).toBe(restartedAt + TTL);
    const late = run(restartedAt + TTL + 2 * TUNING.claimStaggerMs).claims;
    const claims = late.map((c) => c.camera);
    expect(claims.length).toBeGreaterThan(0);
    // Gone, but judged by the TTL: the claim's line shows why (its ages restarted since the renewal it saw).
    expect(late.map((c) => c.expiry)).toEqual(late.map(() => ({ lifetimeMs: TTL, holderGone: true, agesRestartedAgoMs: TTL + 2 * TUNING.claimStaggerMs })));
    expect(claims.every((c) => aCams.includes(c))).toBe(true);
    // A renewal seen since the restart makes the fast expiry count again.
    for (const c of aCams) w.lease(c, "a", restartedAt + 100);
    expect(run(restartedAt + 100 + TIMING.fastTakeoverAfterMs + 2 * TUNING.claimStaggerMs).claims.length).toBeGreaterThan(0);
  });

  it("keeps the post-election hold a tenth of the TTL inside a full TTL", () => {
    expect(TIMING.takeoverAfterMs - TIMING.postElectionHoldMs).toBe(TTL / 10);
  });

  it("keeps the holder's fence ahead of the fast takeover by a tenth of the TTL", () => {
    expect(TIMING.fastTakeoverAfterMs - TIMING.fenceAfterMs).toBe(TTL / 10);
    expect(TIMING.takeoverAfterMs - TIMING.fenceAfterMs).toBe(TTL / 2);
  });
});
