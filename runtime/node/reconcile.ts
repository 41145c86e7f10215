/**
 * One reconcile round as a pure function: from this node's view of the
 * cluster, what it runs, and what it remembers of earlier rounds, decide what
 * to claim, release and hand over now, and when to look again. No I/O and no
 * clock: `now` comes in, so every timing rule (claim only after a full TTL,
 * stagger by rank, settle before evening out, cooldown after a hand-over)
 * can be tested by passing times instead of waiting for them.
 */
import type { CameraSpec, Lease, NodeInfo } from "../../subjects/index.ts";
import { fairShare, handoverCount, rankCandidates, rendezvousScore, type NodeLoad } from "./placement.ts";

export interface PlacementTuning {
  /** A node that is the k-th best home for an unowned camera waits k times this before claiming, ms. Default 150. */
  claimStaggerMs: number;
  /** Claims in flight at once per node. Default 64. */
  maxClaimsInFlight: number;
  /** Membership must be unchanged this long before a node hands cameras over to even the load, ms. Default 1500. */
  settleMs: number;
  /** A node does not reclaim a camera it handed over for this long, ms. Default 3000. */
  handoverCooldownMs: number;
  /** Periodic StatusEvent interval while an actor runs, ms. Default 5000. */
  summaryIntervalMs: number;
}

export const DEFAULT_PLACEMENT: PlacementTuning = {
  claimStaggerMs: 150,
  maxClaimsInFlight: 64,
  settleMs: 1500,
  handoverCooldownMs: 3000,
  summaryIntervalMs: 5000,
};

/** A KV entry as this node last saw it. */
export interface Observed<T> {
  value: T;
  revision: number;
  /** Monotonic time this node last saw the entry change. */
  observedAt: number;
}

/** What a node sees of the cluster: the three buckets, with when it saw each entry change (monotonic ms). */
export interface ClusterSnapshot {
  cameras: ReadonlyMap<string, Observed<CameraSpec>>;
  leases: ReadonlyMap<string, Observed<Lease>>;
  nodes: ReadonlyMap<string, Observed<NodeInfo>>;
  /** When this node last (re)connected: while cut off it saw no renewals, so no age counts from before. */
  connectedAt: number;
  /** Lease and heartbeat TTL, ms: an entry unchanged this long is expired. */
  ttlMs: number;
  /**
   * Nodes provably not connected to the cluster right now: a request to their
   * presence subject just found no responder. Their leases and heartbeats
   * expire after `fastTakeoverMs` instead of the TTL. Default none.
   */
  gone?: ReadonlySet<string>;
  /** Expiry for entries of `gone` nodes, ms: past the holder's own fence (leaseTiming). Default: the TTL. */
  fastTakeoverMs?: number;
}

/** Milliseconds since the entry last changed, as far as this node can judge at `now`. */
export function ageOf(view: Pick<ClusterSnapshot, "connectedAt">, entry: { observedAt: number }, now: number): number {
  return now - Math.max(entry.observedAt, view.connectedAt);
}

/**
 * How long an entry written by `node` lives unchanged: the TTL, or less once
 * the node is provably gone. Not less for an entry last seen to change before
 * this node's ages last restarted (a reconnect, an election): its holder may
 * have held it through that outage by proof, or be holding it just after
 * (the post-election hold), and its fence then counts from the outage, not
 * from its last write (docs/architecture.md).
 */
export function lifetimeOf(view: Pick<ClusterSnapshot, "ttlMs" | "gone" | "fastTakeoverMs" | "connectedAt">, entry: { observedAt: number }, node: string | undefined): number {
  const fast = node !== undefined && view.gone?.has(node) === true && entry.observedAt >= view.connectedAt;
  return fast ? Math.min(view.ttlMs, view.fastTakeoverMs ?? view.ttlMs) : view.ttlMs;
}

/** When the entry expires (monotonic ms), unless it changes first. */
function expiresAt(view: ClusterSnapshot, entry: { observedAt: number }, node?: string): number {
  return Math.max(entry.observedAt, view.connectedAt) + lifetimeOf(view, entry, node);
}

/** `node`: who wrote the entry (a lease's holder, a heartbeat's node), for the faster expiry of a gone node. */
export function isExpired(view: ClusterSnapshot, entry: { observedAt: number } | undefined, now: number, node?: string): boolean {
  return entry === undefined || ageOf(view, entry, now) >= lifetimeOf(view, entry, node);
}

/** This node, as the round sees it. */
export interface SelfState {
  id: string;
  /** MAX_CAMERAS. */
  capacity: number;
  draining: boolean;
  /** Cameras whose actor runs here, with the spec revision it runs. */
  owned: ReadonlyMap<string, number>;
  /** Cameras with a claim in flight. */
  claiming: ReadonlySet<string>;
}

/** What a round remembers for the next; start with `initialMemory`. */
export interface PlacementMemory {
  /** When this node first saw each enabled camera without a live holder (monotonic ms): the stagger counts from there. */
  unownedSince: ReadonlyMap<string, number>;
  /** Cameras this node handed over, and until when it leaves them to others. */
  cooldown: ReadonlyMap<string, number>;
  /** Sorted ids of the nodes taking cameras, as last seen. */
  membership: string;
  membershipChangedAt: number;
  lastHandoverAt: number;
}

export function initialMemory(now: number): PlacementMemory {
  return { unownedSince: new Map(), cooldown: new Map(), membership: "", membershipChangedAt: now, lastHandoverAt: Number.NEGATIVE_INFINITY };
}

export interface ReconcileInput {
  view: ClusterSnapshot;
  self: SelfState;
  memory: PlacementMemory;
  tuning: PlacementTuning;
  /** Monotonic ms, on the clock the view's times are on. */
  now: number;
  /** Rendezvous score; tests pass a constant one to force ties. Default rendezvousScore. */
  score?: (camera: string, node: string, weight: number) => number;
}

export type ReleaseReason = "deleted" | "disabled";

/**
 * Why a taken-over lease counted as expired, for the claim's log line: the
 * fast path (its holder found gone) or the full TTL, and when not fast, why.
 */
export interface TakeoverExpiry {
  /** The lifetime the lease was judged by: the fast takeover time or the TTL. */
  lifetimeMs: number;
  /** A presence probe found the holder without a responder. */
  holderGone: boolean;
  /** How long ago this node's ages last restarted (reconnect, KV writes back, new leases leader). */
  agesRestartedAgoMs: number;
}

export interface ReconcileDecision {
  /** Owned cameras whose spec changed: hand the actor the spec at this revision. */
  updates: Array<{ camera: string; revision: number }>;
  /** Owned cameras to stop and give up: deleted or disabled. */
  releases: Array<{ camera: string; reason: ReleaseReason }>;
  /** Cameras to claim: `create`, or `update` at `takeoverRevision` over an expired lease, unchanged for `leaseAgeMs` in this node's view. */
  claims: Array<{ camera: string; takeoverRevision: number | undefined; leaseAgeMs?: number; expiry?: TakeoverExpiry }>;
  /** Owned cameras to release so the load evens out (each now in cooldown here). */
  handovers: string[];
  memory: PlacementMemory;
  /** The earliest moment a decision could change without any event (a lease or heartbeat expiring, a stagger turn, a settle or cooldown ending); undefined when none is due. */
  wakeAt: number | undefined;
}

export function reconcile(input: ReconcileInput): ReconcileDecision {
  const { view, self, memory, tuning, now } = input;
  const score = input.score ?? rendezvousScore;
  let wakeAt: number | undefined;
  const wake = (at: number) => {
    if (at > now && (wakeAt === undefined || at < wakeAt)) wakeAt = at;
  };
  const decision: ReconcileDecision = { updates: [], releases: [], claims: [], handovers: [], memory, wakeAt: undefined };

  // 1. What we run against what is wanted.
  const running: string[] = [];
  for (const [camera, specRevision] of self.owned) {
    const spec = view.cameras.get(camera);
    if (spec === undefined) decision.releases.push({ camera, reason: "deleted" });
    else if (!spec.value.enabled) decision.releases.push({ camera, reason: "disabled" });
    else {
      running.push(camera);
      if (spec.revision !== specRevision) decision.updates.push({ camera, revision: spec.revision });
    }
  }
  if (self.draining) return decision;

  // 2. Load of every live node that takes cameras.
  const loads = nodeLoads(view, self, running.length + self.claiming.size, now, wake);
  const ids = loads.map((l) => l.node).sort().join(",");
  let { membership, membershipChangedAt, lastHandoverAt } = memory;
  if (ids !== membership) {
    membership = ids;
    membershipChangedAt = now;
  }
  const enabled = [...view.cameras.values()].filter((c) => c.value.enabled);
  const shares = fairShare(enabled.length, loads);
  const me = loads.find((l) => l.node === self.id)!;

  // 3. Claim unowned cameras this node is the best home for; the others wait their turn.
  const unownedSince = new Map(memory.unownedSince);
  const cooldown = new Map(memory.cooldown);
  const mine = new Set(running);
  let unowned = 0;
  let inFlight = self.claiming.size;
  for (const { value: spec } of enabled) {
    const camera = spec.id;
    if (mine.has(camera)) {
      unownedSince.delete(camera);
      continue;
    }
    if (self.claiming.has(camera)) continue;
    const lease = view.leases.get(camera);
    if (lease !== undefined && !isExpired(view, lease, now, lease.value.node)) {
      unownedSince.delete(camera);
      continue;
    }
    unowned++;
    const since = unownedSince.get(camera) ?? now;
    unownedSince.set(camera, since);
    const cooldownUntil = cooldown.get(camera);
    if (cooldownUntil !== undefined && now < cooldownUntil) {
      wake(cooldownUntil);
      continue;
    }
    const rank = rankCandidates(camera, loads, shares, score).indexOf(self.id);
    if (rank < 0) continue;
    const turn = since + rank * tuning.claimStaggerMs;
    if (now < turn) {
      wake(turn);
      continue;
    }
    if (inFlight >= tuning.maxClaimsInFlight) break;
    me.count++; // later decisions this round see the claim
    inFlight++;
    decision.claims.push(
      lease === undefined
        ? { camera, takeoverRevision: undefined }
        : {
            camera,
            takeoverRevision: lease.revision,
            leaseAgeMs: ageOf(view, lease, now),
            expiry: { lifetimeMs: lifetimeOf(view, lease, lease.value.node), holderGone: view.gone?.has(lease.value.node) === true, agesRestartedAgoMs: now - view.connectedAt },
          },
    );
  }
  for (const camera of unownedSince.keys()) {
    if (!view.cameras.get(camera)?.value.enabled) unownedSince.delete(camera);
  }

  // 4. Even the load out once the cluster is settled: hand over, never grab.
  if (unowned === 0 && inFlight === 0) {
    const settledAt = Math.max(membershipChangedAt, lastHandoverAt) + tuning.settleMs;
    if (now >= settledAt) {
      const n = handoverCount(self.id, loads, shares);
      if (n > 0) {
        lastHandoverAt = now;
        decision.handovers = [...running].sort((a, b) => score(a, self.id, 1) - score(b, self.id, 1)).slice(0, n);
        for (const camera of decision.handovers) cooldown.set(camera, now + tuning.handoverCooldownMs);
        wake(now + tuning.settleMs);
      }
    } else wake(settledAt);
  }
  for (const [camera, until] of cooldown) if (now >= until) cooldown.delete(camera);

  decision.memory = { unownedSince, cooldown, membership, membershipChangedAt, lastHandoverAt };
  decision.wakeAt = wakeAt;
  return decision;
}

/** Live, non-draining nodes with the cameras each holds by unexpired leases; this node's count comes from memory. */
function nodeLoads(view: ClusterSnapshot, self: SelfState, selfCount: number, now: number, wake: (at: number) => void): NodeLoad[] {
  const counts = new Map<string, number>();
  for (const lease of view.leases.values()) {
    if (isExpired(view, lease, now, lease.value.node)) continue;
    wake(expiresAt(view, lease, lease.value.node));
    counts.set(lease.value.node, (counts.get(lease.value.node) ?? 0) + 1);
  }
  const loads: NodeLoad[] = [];
  for (const info of view.nodes.values()) {
    if (isExpired(view, info, now, info.value.node)) continue;
    wake(expiresAt(view, info, info.value.node));
    // A gone node claims nothing: the others rank without it at once, not when its heartbeat ages out.
    if (info.value.draining === true || info.value.node === self.id || view.gone?.has(info.value.node) === true) continue;
    loads.push({ node: info.value.node, capacity: info.value.capacity, count: counts.get(info.value.node) ?? 0 });
  }
  loads.push({ node: self.id, capacity: self.capacity, count: selfCount });
  return loads;
}
