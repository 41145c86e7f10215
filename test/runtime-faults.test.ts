// The runtime under NATS faults: a restarted server, a cluster member killed
// with SIGKILL (a follower, then the leader of the leases bucket), and a node
// cut off from the cluster. Real `camfleet node` processes with sim actors;
// judged from the leases bucket, the nodes' logs and the status stream, which
// is read from its leader during the fault and in full from the beginning
// afterwards (a live consumer can stall for a while when its server dies).

import { describe, expect, it, onTestFinished } from "vitest";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ensureJetStream, LOG_MESSAGES, type NatsServerProcess } from "../runtime/index.ts";
import {
  cameraIds,
  cameraTrail,
  claimsFromLogs,
  connectedServer,
  connectTestClient,
  countByNode,
  expectOwnedExactlyOnce,
  explainUnsettled,
  ownershipViolations,
  jetStreamLeaders,
  leadLeasesFrom,
  logLines,
  logTime,
  openLeases,
  ownedByLog,
  putCameras,
  quietestServer,
  readStatusEvents,
  renewalRounds,
  startFleet,
  startFleetNode,
  stopEverything,
  streamingNow,
  type FleetNodeProcess,
  type LeaseOwner,
} from "./helpers/fleet.ts";
import { startNats, startNatsCluster, type NatsClusterHandle } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

/** No lease lost: nothing moved or re-claimed. Some fenced: every re-claimed camera is at a higher epoch than before. */
function expectLeasesKeptOrReclaimedHigher(
  fences: number,
  c: { moved: string[]; reclaimed: string[]; before: Map<string, { epoch: number }>; after: Map<string, { epoch: number }> },
): void {
  if (fences === 0) {
    expect(c.moved).toEqual([]);
    expect(c.reclaimed).toEqual([]);
  } else {
    for (const id of c.reclaimed) expect(c.after.get(id)!.epoch).toBeGreaterThan(c.before.get(id)!.epoch);
  }
}

/** Owned once each by `nodes`, and each camera's last event is STREAMING under its current owner and epoch. */
async function settled(leases: KV, nc: NatsConnection, nodes: readonly FleetNodeProcess[], cameras: readonly string[]) {
  const o = await expectOwnedExactlyOnce(leases, nodes, cameras);
  return (await streamingNow(nc, o, cameras)) ? o : undefined;
}

/** `settled`, and the load even (no node more than one camera off the mean), so no hand-over is still due. */
async function balanced(leases: KV, nc: NatsConnection, nodes: readonly FleetNodeProcess[], cameras: readonly string[]) {
  const o = await settled(leases, nc, nodes, cameras);
  if (o === undefined) return undefined;
  const counts = countByNode(o, cameras);
  const mean = cameras.length / nodes.length;
  return nodes.every((n) => Math.abs((counts.get(n.id) ?? 0) - mean) < 1) ? o : undefined;
}

/** Cameras whose owner node, and whose epoch, changed between two ownership maps. */
function changes(before: ReadonlyMap<string, LeaseOwner>, after: ReadonlyMap<string, LeaseOwner>, cameras: readonly string[]) {
  return {
    moved: cameras.filter((c) => before.get(c)?.node !== after.get(c)?.node),
    reclaimed: cameras.filter((c) => before.get(c)?.epoch !== after.get(c)?.epoch),
  };
}

function fenceCount(nodes: readonly FleetNodeProcess[]): number {
  return nodes.reduce((sum, n) => sum + logLines(n, LOG_MESSAGES.leaseLost).length, 0);
}

/** Lease timing of the sim nodes (LEASE_TTL_MS 3000): renew every TTL/6, fence at TTL/2, takeover after a TTL, or TTL/2 + TTL/10 from a node gone from the cluster. */
const TTL_MS = 3000;
const FAST_TAKEOVER_MS = TTL_MS / 2 + TTL_MS / 10;

function clusterPids(cluster: NatsClusterHandle): Array<number | undefined> {
  return cluster.servers.map((s) => s.pid);
}

/** A 3-server cluster, 3 nodes that know every server, 30 cameras settled. */
async function clusterFleet() {
  const cluster = await startNatsCluster({ onCleanup: onTestFinished });
  const pids = clusterPids(cluster);
  // The streams and buckets exist before the nodes start, as in a running
  // fleet: three nodes creating R3 streams at once on a fresh cluster can
  // exceed a JetStream request timeout on this machine, which fails a node's
  // start (reported separately), and start-up is not what these tests are about.
  const setup = await connectTestClient(cluster.urls, onTestFinished);
  await ensureJetStream(setup, { replicas: 3 });
  await setup.close();
  const nodes = await startFleet({ count: 3, natsUrls: cluster.urls, onCleanup: onTestFinished });
  const nc = await connectTestClient(cluster.urls, onTestFinished);
  const leases = await openLeases(nc);
  const cameras = await putCameras(nc, cameraIds(30));
  const before = await waitFor(() => balanced(leases, nc, nodes, cameras), { timeoutMs: 40_000, intervalMs: 200, message: "30 cameras owned, STREAMING, 10 per node" });
  return { cluster, pids, nodes, nc, leases, cameras, before };
}

// Each test's timeout is at least the sum of its own waits' deadlines (servers and nodes
// starting, each waitFor's, each renewal round's, teardown), so a slow run fails on the
// wait that explains itself, never on the test timeout cutting in first.
describe("the fleet under NATS faults", () => {
  it("a restarted nats-server loses and doubles no camera", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const natsPid = nats.server.pid;
    const nodes = await startFleet({ count: 3, natsUrls: [nats.url], onCleanup: onTestFinished });
    const nc = await connectTestClient([nats.url], onTestFinished);
    const leases = await openLeases(nc);
    const cameras = await putCameras(nc, cameraIds(30));
    const before = await waitFor(() => balanced(leases, nc, nodes, cameras), { timeoutMs: 20_000, intervalMs: 100, message: "30 cameras owned, STREAMING, 10 per node" });

    const downAt = Date.now();
    await nats.server.stop();
    await nats.server.start();
    const outageMs = Date.now() - downAt;
    await waitFor(() => nodes.every((n) => logLines(n, LOG_MESSAGES.reconnectedToNats).length === 1), { timeoutMs: 15_000, message: "every node reconnected" });
    await explainUnsettled(
      waitFor(() => settled(leases, nc, nodes, cameras), { timeoutMs: 30_000, intervalMs: 200, message: "30 cameras owned once and STREAMING after the restart" }),
      nodes,
    );
    // Past a full TTL more, so a late takeover or fence would show too.
    await renewalRounds(leases, cameras, 5);
    const final = await explainUnsettled(
      waitFor(() => settled(leases, nc, nodes, cameras), { timeoutMs: 10_000, intervalMs: 200, message: "still settled a TTL later" }),
      nodes,
    );
    const { moved, reclaimed } = changes(before, final, cameras);
    const counts = (m: ReadonlyMap<string, LeaseOwner>) => countByNode(m, cameras);
    console.log(
      `nats-server restart: down ${outageMs} ms; ${fenceCount(nodes)} leases fenced, ${reclaimed.length}/30 re-claimed, ` +
        `${moved.length}/30 moved to another node (${nodes.map((n) => `${n.id}: ${counts(before).get(n.id) ?? 0}→${counts(final).get(n.id) ?? 0}`).join(", ")})`,
    );
    expect(nodes.every((n) => n.alive())).toBe(true);
    for (const c of reclaimed) expect(final.get(c)!.epoch).toBeGreaterThan(before.get(c)!.epoch);
    const events = await readStatusEvents(nc);
    expect(await ownershipViolations(events, nodes)).toEqual([]);

    expect(await stopEverything(nodes, [{ servers: [nats.server], close: nats.close }], [natsPid])).toEqual([]);
  }, 200_000);

  it("kill -9 of a follower server: no camera lost or doubled; only a node that had to move servers may lose leases", async () => {
    const { cluster, pids, nodes, nc, leases, cameras, before } = await clusterFleet();
    const leaders = await jetStreamLeaders(nc, cluster.servers);
    // A server some node is connected to, so that node must move to another server and keep its leases meanwhile.
    const victim = quietestServer(cluster.servers, leaders, nodes);
    const movedNodes = nodes.filter((n) => connectedServer(n) === `127.0.0.1:${victim.port}`).map((n) => n.id);

    const killedAt = Date.now();
    await victim.kill();
    // Well past a TTL: a lost or taken-over lease would show by now.
    await renewalRounds(leases, cameras, 6, 10_000);
    const after = await explainUnsettled(
      waitFor(() => settled(leases, nc, nodes, cameras), { timeoutMs: 20_000, intervalMs: 200, message: "30 cameras owned once and STREAMING after the kill" }),
      nodes,
    );
    const { moved, reclaimed } = changes(before, after, cameras);
    console.log(
      `kill -9 of follower ${victim.name} (leaders ${JSON.stringify(leaders)}; connected: ${movedNodes.join(",")}): checked ${Date.now() - killedAt} ms after; ` +
        `${fenceCount(nodes)} leases fenced, ${reclaimed.length}/30 re-claimed, ${moved.length}/30 moved`,
    );
    // A node on the victim must notice, reconnect elsewhere and renew within 3/4 TTL of its last
    // renewal; on a loaded machine it can miss that and fence, which is the design working, not a
    // fault. Nodes that stayed on their server have no reason to: they must not fence at all.
    const steady = nodes.filter((n) => !movedNodes.includes(n.id));
    expect(fenceCount(steady), `fences on nodes not connected to ${victim.name}`).toBe(0);
    expect(nodes.every((n) => n.alive())).toBe(true);
    expectLeasesKeptOrReclaimedHigher(fenceCount(nodes), { moved, reclaimed, before, after });
    const events = await waitFor(() => readStatusEvents(nc), { timeoutMs: 20_000, message: "the whole status stream" });
    expect(await ownershipViolations(events, nodes)).toEqual([]);

    expect(await stopEverything(nodes, [cluster], pids)).toEqual([]);
  }, 270_000);

  it("kill -9 of the leases and meta leader: the elections fence nothing, every epoch stays, nothing is doubled", async () => {
    // The hardest case for a node's outage proof (a majority of servers reachable from its
    // own): one server leads both the leases bucket and the meta group, and every node knows
    // only the other two, so after the kill all three may well sit on one server. The proof
    // then rests on each node's route witness (its second connection, on the other server).
    const cluster = await startNatsCluster({ onCleanup: onTestFinished, noAdvertise: true });
    const pids = clusterPids(cluster);
    const nc = await connectTestClient(cluster.urls, onTestFinished);
    await ensureJetStream(nc, { replicas: 3 });
    const meta = await waitFor(async () => (await jetStreamLeaders(nc, cluster.servers)).meta, { timeoutMs: 20_000, message: "the meta leader" });
    await leadLeasesFrom(nc, cluster.servers, meta);
    const victim = cluster.servers.find((s) => s.name === meta)!;
    const others = cluster.servers.filter((s) => s !== victim).map((s) => `nats://127.0.0.1:${s.port}`);
    const nodes = await startFleet({ count: 3, natsUrls: () => others, env: { CAMFLEET_REPLICAS: "3" }, onCleanup: onTestFinished });
    const leases = await openLeases(nc);
    const cameras = await putCameras(nc, cameraIds(30));
    const before = await waitFor(() => balanced(leases, nc, nodes, cameras), { timeoutMs: 40_000, intervalMs: 200, message: "30 cameras owned, STREAMING, 10 per node" });
    const leaders = await jetStreamLeaders(nc, cluster.servers);
    expect(leaders.leases, "the leases leader is the meta leader").toBe(victim.name);
    expect(leaders.meta).toBe(victim.name);

    const killedAt = Date.now();
    await victim.kill();
    // Renewals find no leader until one is elected (5–9 s on 2.9): the nodes hold their
    // leases meanwhile, so once writes work the same leases are renewed at the same epochs.
    await renewalRounds(leases, cameras, 3, 30_000);
    const renewedMs = Date.now() - killedAt;
    // Past a full TTL more, so a late takeover or fence would show too.
    await renewalRounds(leases, cameras, 8, 10_000);
    const after = await explainUnsettled(
      waitFor(() => settled(leases, nc, nodes, cameras), { timeoutMs: 20_000, intervalMs: 250, message: "30 cameras owned once and STREAMING after the kill" }),
      nodes,
    );
    const { moved, reclaimed } = changes(before, after, cameras);
    console.log(
      `kill -9 of leases leader ${victim.name} (leaders ${JSON.stringify(leaders)}): renewed again ${renewedMs} ms after; ` +
        `${fenceCount(nodes)} leases fenced, ${reclaimed.length}/30 re-claimed, ${moved.length}/30 moved to another node`,
    );
    expect(nodes.every((n) => n.alive())).toBe(true);
    // Issue #14 item 3: the election fences no camera of a node that stays connected.
    expect(fenceCount(nodes), cameraTrail(nodes, cameras, 4)).toBe(0);
    expect(moved).toEqual([]);
    expect(reclaimed).toEqual([]);
    // When the victim also led the meta group and the status stream, creating the reader's consumer
    // timed out for 20 s on 2.9.10 (a CI run), though the nodes renewed after 7.6 s: give it 60 s.
    const events = await waitFor(() => readStatusEvents(nc), { timeoutMs: 60_000, message: "the whole status stream" });
    expect(await ownershipViolations(events, nodes)).toEqual([]);

    expect(await stopEverything(nodes, [cluster], pids)).toEqual([]);
  }, 240_000);

  it("a node cut off from NATS fences each camera before another node claims it", async () => {
    // Servers that do not advertise each other, so a node given one URL cannot
    // roam to the others; with no connect_urls the nodes would pick 1 replica,
    // so ask for 3. The cut-off server leads neither the leases bucket nor, if
    // it can be helped, the nodes bucket or the meta group, so what this test
    // sees is the partition, not a leader election.
    const cluster = await startNatsCluster({ onCleanup: onTestFinished, noAdvertise: true });
    const pids = clusterPids(cluster);
    const setup = await connectTestClient(cluster.urls, onTestFinished);
    await ensureJetStream(setup, { replicas: 3 });
    const leaders = await jetStreamLeaders(setup, cluster.servers);
    const cut: NatsServerProcess = quietestServer(cluster.servers, leaders);
    const kept = cluster.servers.filter((s) => s !== cut).map((s) => s.url);
    await setup.close();

    const env = { CAMFLEET_REPLICAS: "3" };
    const a = await startFleetNode({ id: "a", natsUrls: [cut.url], env, onCleanup: onTestFinished });
    const others = await startFleet({ count: 2, ids: ["b", "c"], natsUrls: kept, env, onCleanup: onTestFinished });
    const nodes = [a, ...others];
    const nc = await connectTestClient(kept, onTestFinished);
    const leases = await openLeases(nc);
    const cameras = await putCameras(nc, cameraIds(15));
    const before = await waitFor(
      async () => {
        const o = await settled(leases, nc, nodes, cameras);
        return o !== undefined && (countByNode(o, cameras).get(a.id) ?? 0) > 0 ? o : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, message: "15 cameras owned and STREAMING, some on a" },
    );
    const ofA = [...before].filter(([, o]) => o.node === a.id).map(([c]) => c);

    const cutAt = Date.now();
    await cut.stop();
    await waitFor(() => ofA.every((c) => !ownedByLog(a).has(c)), { timeoutMs: 10_000, message: "a fenced all its cameras" });
    const after = await explainUnsettled(
      waitFor(() => settled(leases, nc, others, cameras), { timeoutMs: 30_000, intervalMs: 200, message: "all 15 cameras owned by b and c and STREAMING" }),
      nodes,
    );

    const fences = new Map(logLines(a, LOG_MESSAGES.leaseLost).map((l) => [String(l.camera), l]));
    // Claims reach KV before their log lines cross the nodes' stdout pipes: give the lines a moment.
    const tookOver = (c: ReturnType<typeof claimsFromLogs>) => ofA.every((camera) => c.some((x) => x.camera === camera && x.epoch > before.get(camera)!.epoch));
    const claims = await waitFor(() => (tookOver(claimsFromLogs(others)) ? claimsFromLogs(others) : undefined), { timeoutMs: 3000 }).catch(() => claimsFromLogs(others));
    const timeline: string[] = [];
    for (const camera of ofA) {
      const fence = fences.get(camera);
      expect(fence, `a logged no fence for ${camera}`).toBeDefined();
      expect(fence!.reason).toBe("expired");
      const takeover = claims.find((c) => c.camera === camera && c.epoch > before.get(camera)!.epoch);
      expect(takeover, `nobody claimed ${camera} after a`).toBeDefined();
      // Fence before claim without comparing clocks across processes. The takeover replaced the lease
      // at a's last acknowledged renewal or later (a's renewal can land with its reply lost), so both
      // durations count from that renewal or later: a's from sending it, the claimer's from seeing it.
      // a stopped sinceRenewalMs after sending; the claimer claimed at least leaseAgeMs after seeing.
      // a's server is gone, so a's presence subject has no responder: the fast takeover, past a's fence.
      expect(takeover!.takeover).toBe(true);
      expect(takeover!.takeoverRevision).toBeGreaterThanOrEqual(Number(fence!.revision));
      expect(takeover!.leaseAgeMs).toBeGreaterThanOrEqual(FAST_TAKEOVER_MS);
      expect(Number(fence!.sinceRenewalMs)).toBeLessThan(takeover!.leaseAgeMs!);
      timeline.push(
        `${camera}: a fenced ${String(fence!.sinceRenewalMs)} ms after its renewal at revision ${String(fence!.revision)}; ` +
          `${takeover!.node} took revision ${takeover!.takeoverRevision} over after seeing it unchanged ${takeover!.leaseAgeMs} ms ` +
          `(log times +${logTime(fence!) - cutAt} / +${takeover!.time - cutAt} ms)`,
      );
    }
    console.log(`partition of a from ${cut.name} (leaders ${JSON.stringify(leaders)}), ${ofA.length} cameras:\n  ${timeline.join("\n  ")}`);
    expect(countByNode(after, cameras).get(a.id) ?? 0).toBe(0);
    expect(a.alive()).toBe(true);

    // The server comes back: a rejoins with nothing, and nothing is doubled.
    await cut.start();
    await a.proc.waitForLog((l) => l.msg === LOG_MESSAGES.reconnectedToNats, 20_000);
    await explainUnsettled(
      waitFor(() => settled(leases, nc, nodes, cameras), { timeoutMs: 30_000, intervalMs: 200, message: "15 cameras owned once after a rejoined" }),
      nodes,
    );
    const events = await waitFor(() => readStatusEvents(nc), { timeoutMs: 20_000, message: "the whole status stream" });
    expect(await ownershipViolations(events, nodes)).toEqual([]);

    expect(await stopEverything(nodes, [cluster], pids)).toEqual([]);
  }, 270_000);
});
