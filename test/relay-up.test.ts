// `camfleet up` as a user runs it: embedded NATS, a node and the gateway in
// one process. A testsrc camera publishes on demand to that very gateway
// (WHIP_URL follows its port), with the API token on WHIP as on every route.

import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { whepViewer } from "./helpers/relay-peers.ts";
import { upEnv } from "./helpers/up.ts";
import { waitFor } from "./helpers/wait.ts";

describe("camfleet up with the relay", () => {
  it("serves WHEP for an on-demand testsrc camera on its own gateway, token required, node metrics on the same port", async () => {
    const { env, natsPort } = await upEnv(onTestFinished);
    const token = "up-tok-5150";
    const up = runCamfleet(["up"], {
      env: {
        ...env,
        CAMFLEET_ACTOR_KIND: "camera",
        CAMFLEET_API_TOKEN: token,
        ON_DEMAND_LINGER_MS: "1000",
      },
      onCleanup: onTestFinished,
    });
    const ready = await up.waitForLog((l) => l.msg === LOG_MESSAGES.gatewayReady, 30_000);
    const url = ready.url as string;
    await up.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);

    const metrics = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    const text = await metrics.text();
    expect(text).toContain("camfleet_node_capacity");
    expect(text).toContain("camfleet_relay_forward_seconds");
    // GET / names what up's own detector offers.
    const info = (await (await fetch(`${url}/`, { headers: { authorization: `Bearer ${token}` } })).json()) as { capabilities: { solutions: string[] | null } };
    expect(info.capabilities.solutions).toContain("motion");

    const nc = await connect({ servers: `nats://127.0.0.1:${natsPort}` });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    await client.putCamera({ id: "pattern", url: "testsrc:?size=320x240&rate=15", publish: "on-demand" });
    await waitFor(async () => (await client.cameraStatus("pattern").catch(() => undefined))?.state === "STREAMING", { timeoutMs: 20_000, intervalMs: 100, message: "pattern STREAMING" });

    const viewer = await whepViewer(`${url}/whep/pattern`, { onCleanup: onTestFinished, token });
    await waitFor(() => viewer.received.keyFrames > 0 && viewer.received.packets > 20, { timeoutMs: 15_000, message: "video through up's own relay" });
    expect(await client.cameraStatus("pattern")).toMatchObject({ publishing: true, viewers: 1 });
    expect(JSON.stringify(up.lines)).not.toContain(token);

    expect(await viewer.remove()).toBe(200);
    await waitFor(async () => (await client.cameraStatus("pattern")).publishing === false, { timeoutMs: 10_000, intervalMs: 100, message: "publishing stops after the linger time" });
    const exit = await up.stop();
    expect(exit.code).toBe(0);
  });
});
