// The route witness (runtime/node/witness.ts): a node's second connection,
// kept on another server than its main one, whose answer proves a working
// route between two servers (the lease hold through NATS elections, issue #14
// item 3). Against a real 3-server cluster.

import { describe, expect, it, onTestFinished } from "vitest";
import { connectNats, RouteWitness, silentLogger } from "../runtime/index.ts";
import { startNatsCluster } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

describe("RouteWitness", () => {
  it("answers from another server than the main connection's, finds another when its server dies, and leaves the main one's server alone", async () => {
    const cluster = await startNatsCluster({ onCleanup: onTestFinished, noAdvertise: true });
    const urls = cluster.servers.map((s) => `nats://127.0.0.1:${s.port}`);
    const logger = silentLogger();
    // The main connection knows only the first server, so it stays there.
    const main = await connectNats({ servers: [urls[0]!], name: "main", logger });
    onTestFinished(() => main.close());
    const witness = new RouteWitness({
      node: "w1",
      servers: urls,
      logger,
      connect: (servers, signal) => connectNats({ servers, name: "witness", logger, retryFirstConnect: true, ignoreClusterUpdates: true, signal }),
    });
    onTestFinished(() => witness.close());
    expect(witness.useful).toBe(true);
    witness.follow(main);

    const mainServer = main.info!.server_id;
    const first = await waitFor(() => witness.probe(main, 1000), { timeoutMs: 10_000, message: "the witness answers" });
    expect(first).not.toBe(mainServer);

    // Kill the server the witness sits on: it must answer again from the one left, never from main's.
    const serverIds = await Promise.all(cluster.servers.map(async (s) => ((await (await fetch(`http://127.0.0.1:${s.monitorPort}/varz`)).json()) as { server_id: string }).server_id));
    const victim = cluster.servers[serverIds.indexOf(first)]!;
    expect(victim).not.toBe(cluster.servers[0]);
    const killedAt = Date.now();
    await victim.kill();
    const second = await waitFor(() => witness.probe(main, 500), { timeoutMs: 10_000, intervalMs: 50, message: "the witness answers from the server left" });
    const movedMs = Date.now() - killedAt;
    expect(second).not.toBe(first);
    expect(second).not.toBe(mainServer);
    expect(serverIds).toContain(second);
    console.log(`route witness: answered from another server ${movedMs} ms after its own was killed`);
    // Within the lease keeper's fence (TTL/2 = 1.5 s at the default TTL), with room to spare on a loaded host.
    expect(movedMs).toBeLessThan(5000);

    await witness.close();
    expect(await witness.probe(main, 200)).toBeUndefined();
  }, 60_000);

  it("has nothing to witness with one server", () => {
    const witness = new RouteWitness({ node: "w2", servers: ["nats://127.0.0.1:4222"], logger: silentLogger(), connect: () => Promise.reject(new Error("never called")) });
    expect(witness.useful).toBe(false);
  });
});
