/**
 * Placement decisions as pure functions: which node should run a camera, and
 * how many cameras each node should hold. The node feeds them its view of the
 * cluster; nothing here does I/O or reads a clock.
 */

export interface NodeLoad {
  node: string;
  /** MAX_CAMERAS of the node. */
  capacity: number;
  /** Cameras it holds now (valid leases), plus claims it has in flight when it is us. */
  count: number;
}

/**
 * 64-bit FNV-1a of `camera/node` with murmur3's final mix, as a number in
 * (0, 1). Stable across processes and versions. The mix matters: node ids
 * often differ only in their last character, and plain FNV leaves those
 * hashes correlated, which skews the spread by a third.
 */
export function hashUnit(camera: string, node: string): number {
  let h = 0xcbf29ce484222325n;
  const text = `${camera}/${node}`;
  for (let i = 0; i < text.length; i++) {
    h ^= BigInt(text.charCodeAt(i));
    h = (h * 0x100000001b3n) & MASK64;
  }
  h = fmix64(h);
  // Top 53 bits as a fraction; never 0 or 1, so the logarithm below is finite.
  return (Number(h >> 11n) + 0.5) / 2 ** 53;
}

const MASK64 = 0xffffffffffffffffn;

function fmix64(k: bigint): bigint {
  k ^= k >> 33n;
  k = (k * 0xff51afd7ed558ccdn) & MASK64;
  k ^= k >> 33n;
  k = (k * 0xc4ceb9fe1a85ec53n) & MASK64;
  k ^= k >> 33n;
  return k;
}

/**
 * Weighted rendezvous (highest random weight) score: each camera ranks every
 * node the same way on every node, so they agree on the best home without
 * talking. A node with twice the free capacity wins twice as often.
 */
export function rendezvousScore(camera: string, node: string, weight: number): number {
  if (weight <= 0) return -Infinity;
  return -weight / Math.log(hashUnit(camera, node));
}

/**
 * Fair shares for `cameras` over `nodes`: every node should hold between
 * `floor` and `ceil`, never above its own capacity. With uneven capacities
 * the nodes that are full are set aside and the rest share what remains.
 */
export function fairShare(cameras: number, nodes: readonly NodeLoad[]): Map<string, { floor: number; ceil: number }> {
  const shares = new Map<string, { floor: number; ceil: number }>();
  let open = [...nodes];
  let remaining = cameras;
  // Nodes whose capacity is below an even share take all they can; repeat with the rest.
  for (;;) {
    if (open.length === 0) break;
    const even = remaining / open.length;
    const small = open.filter((n) => n.capacity <= Math.floor(even));
    if (small.length === 0) {
      const floor = Math.floor(even);
      const ceil = Math.ceil(even);
      for (const n of open) shares.set(n.node, { floor: Math.min(floor, n.capacity), ceil: Math.min(ceil, n.capacity) });
      break;
    }
    for (const n of small) {
      shares.set(n.node, { floor: n.capacity, ceil: n.capacity });
      remaining -= n.capacity;
    }
    open = open.filter((n) => !small.includes(n));
  }
  return shares;
}

/**
 * Nodes that may claim one more camera now (below their fair ceiling and
 * their capacity), best home first for this camera; equal scores go to the
 * lower id, so every node ranks the same way.
 */
export function rankCandidates(
  camera: string,
  nodes: readonly NodeLoad[],
  shares: Map<string, { floor: number; ceil: number }>,
  score: (camera: string, node: string, weight: number) => number = rendezvousScore,
): string[] {
  return nodes
    .filter((n) => n.count < (shares.get(n.node)?.ceil ?? 0) && n.count < n.capacity)
    .map((n) => ({ node: n.node, score: score(camera, n.node, n.capacity - n.count) }))
    .sort((a, b) => b.score - a.score || (a.node < b.node ? -1 : 1))
    .map((c) => c.node);
}

/**
 * How many cameras `self` should hand over now so the load evens out: when
 * it is above its ceiling, the excess; when some node is below its floor and
 * `self` is the most loaded node above its own floor (ties broken by id), one.
 */
export function handoverCount(self: string, nodes: readonly NodeLoad[], shares: Map<string, { floor: number; ceil: number }>): number {
  const me = nodes.find((n) => n.node === self);
  const myShare = shares.get(self);
  if (me === undefined || myShare === undefined) return 0;
  if (me.count > myShare.ceil) return me.count - myShare.ceil;
  const starving = nodes.some((n) => n.count < (shares.get(n.node)?.floor ?? 0));
  if (!starving || me.count <= myShare.floor) return 0;
  const donors = nodes
    .filter((n) => n.count > (shares.get(n.node)?.floor ?? Infinity))
    .sort((a, b) => b.count - a.count || (a.node < b.node ? -1 : 1));
  return donors[0]?.node === self ? 1 : 0;
}
