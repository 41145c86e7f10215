// ClusterView against a real 3-server cluster: the check a takeover makes
// first (issue #14 item 3). A node that holds no lease writes nothing to the
// leases bucket, so an election can pass without any write of its own
// failing; its ages would then span the election, through which a holder may
// have held its lease by proof. The check catches the new leader.

import { describe, expect, it, onTestFinished } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { BUCKETS } from "../subjects/index.ts";
import { ClusterView, ensureJetStream, silentLogger } from "../runtime/index.ts";
import { connectTestClient, jetStreamLeaders, leadLeasesFrom } from "./helpers/fleet.ts";
import { startNatsCluster } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

/** A 3-server cluster with camfleet's streams and buckets, and the three buckets a view watches. */
async function clusterBuckets() {
  const cluster = await startNatsCluster({ onCleanup: onTestFinished });
  const nc = await connectTestClient(cluster.urls, onTestFinished);
  await ensureJetStream(nc, { replicas: 3 });
  const kvm = new Kvm(nc);
  const [cameras, leases, nodes] = await Promise.all([kvm.open(BUCKETS.cameras), kvm.open(BUCKETS.leases), kvm.open(BUCKETS.nodes)]);
  return { cluster, nc, cameras, leases, nodes };
}

describe("ClusterView.leasesLeaderUnchanged", () => {
  it("says no once after the leases stream changed leader, and restarts every age then", async () => {
    const { cluster, nc, cameras, leases, nodes } = await clusterBuckets();
    await leases.put("cam1", JSON.stringify({ camera: "cam1", node: "gone-node", epoch: 1, acquired_ts: Date.now(), renewed_ts: Date.now() }));
    // Health checks far apart: the check under test is the only one that looks.
    const view = new ClusterView({ cameras, leases, nodes, ttlMs: 3000, logger: silentLogger(), healthCheckMs: 3_600_000 });
    await view.start();
    onTestFinished(() => view.stop());
    await waitFor(() => view.leases.get("cam1"), { timeoutMs: 5000, message: "the lease in the view" });

    expect(await view.leasesLeaderUnchanged()).toBe(true); // learns the leader
    expect(await view.leasesLeaderUnchanged()).toBe(true);
    // One round's takeovers share one request.
    const [a, b] = await Promise.all([view.leasesLeaderUnchanged(), view.leasesLeaderUnchanged()]);
    expect([a, b]).toEqual([true, true]);

    const lease = view.leases.get("cam1")!;
    await waitFor(() => (view.age(lease) >= 200 ? true : undefined), { timeoutMs: 5000, intervalMs: 20, message: "the lease ages" });
    const leader = (await jetStreamLeaders(nc, cluster.servers)).leases!;
    const other = cluster.servers.find((s) => s.name !== leader)!;
    await leadLeasesFrom(nc, cluster.servers, other.name);

    expect(await view.leasesLeaderUnchanged()).toBe(false);
    expect(view.age(lease)).toBeLessThan(200); // restarted by the check
    expect(await view.leasesLeaderUnchanged()).toBe(true); // the new leader is now the known one
  }, 60_000);

  it("deletes its watches' consumers on the server when it stops, instead of leaving them for their 5-minute inactivity threshold", async () => {
    const { cluster, nc, cameras, leases, nodes } = await clusterBuckets();
    const jsm = await jetstreamManager(nc);
    const consumers = async () => Promise.all([BUCKETS.cameras, BUCKETS.leases, BUCKETS.nodes].map(async (b) => (await jsm.streams.info(`KV_${b}`)).state.consumer_count));
    const view = new ClusterView({ cameras, leases, nodes, ttlMs: 3000, logger: silentLogger() });
    await view.start();
    expect(await consumers()).toEqual([1, 1, 1]);
    await view.stop();
    await waitFor(async () => ((await consumers()).every((n) => n === 0) ? true : undefined), { timeoutMs: 5000, intervalMs: 100, message: "no consumer left on the buckets" });
  }, 60_000);
});
