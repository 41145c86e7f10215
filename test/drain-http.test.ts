// Draining a node over HTTP: the gateway's POST /nodes/{node}/drain (over the
// node's control subject) and a node's own POST /drain on its ops port (what a
// Kubernetes preStop hook calls). Real nats-server, real `camfleet node`
// processes with sim cameras, the gateway in-process.

import { describe, expect, it, onTestFinished } from "vitest";
import { LOG_MESSAGES } from "../runtime/index.ts";
import { startFleetNode, type FleetNodeProcess } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { callJson } from "./helpers/http.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

const TOKEN = "drain-secret-token";

async function opsUrl(node: FleetNodeProcess): Promise<string> {
  const line = await node.proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps);
  return String(line.url);
}

async function setUp(env: Record<string, string> = {}) {
  const nats = await startNats({ onCleanup: onTestFinished });
  const [n1, n2] = await Promise.all(["n1", "n2"].map((id) => startFleetNode({ id, natsUrls: [nats.url], env, onCleanup: onTestFinished })));
  const gw = await startTestGateway({ natsUrl: nats.url, env, onCleanup: onTestFinished });
  const auth: Record<string, string> = env.CAMFLEET_API_TOKEN !== undefined ? { authorization: `Bearer ${env.CAMFLEET_API_TOKEN}` } : {};
  for (let i = 0; i < 6; i++) {
    expect((await callJson(gw, "POST", `/cameras/c${i}/start`, { stream_url: `rtsp://10.0.0.1/${i}`, solutions: [] }, auth)).status).toBe(200);
  }
  const owners = async () => {
    const { body } = await callJson(gw, "GET", "/cameras", undefined, auth);
    return (body.cameras as Array<{ node: string | null; state: string }>).map((c) => (c.state === "STREAMING" ? c.node : null));
  };
  await waitFor(async () => (await owners()).every((n) => n !== null), { timeoutMs: 15_000, message: "all six cameras streaming" });
  return { gw, n1: n1!, n2: n2!, owners, auth };
}

describe("drain over HTTP", () => {
  it("POST /nodes/{node}/drain on the gateway hands every camera of that node over; bad and unknown nodes change nothing", async () => {
    const { gw, n1, owners } = await setUp();
    expect((await callJson(gw, "POST", "/nodes/n.1/drain")).body.error.code).toBe("INVALID_ARGUMENT");
    const unknown = await callJson(gw, "POST", "/nodes/nobody/drain");
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("NOT_FOUND");
    expect((await callJson(gw, "GET", "/nodes/n1/drain")).status).toBe(404);

    // Spread over both nodes: make sure n1 holds some before draining it.
    await waitFor(async () => (await owners()).includes("n1"), { timeoutMs: 15_000, message: "n1 runs a camera" });
    const held = (await owners()).filter((n) => n === "n1").length;
    const res = await callJson(gw, "POST", "/nodes/n1/drain");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ node: "n1", draining: true, released: held });
    await waitFor(async () => (await owners()).every((n) => n === "n2"), { timeoutMs: 15_000, message: "every camera on n2" });
    const stats = await callJson(gw, "GET", "/system/stats");
    expect(stats.body.nodes.find((n: { node: string }) => n.node === "n1").draining).toBe(true);
    expect(n1.alive()).toBe(true);
  });

  it("a node's own POST /drain (preStop): token-checked when CAMFLEET_API_TOKEN is set, POST only", async () => {
    const { n2, owners, auth } = await setUp({ CAMFLEET_API_TOKEN: TOKEN });
    const ops = await opsUrl(n2);
    expect((await callJson({ url: ops }, "GET", "/drain")).status).toBe(405);
    const anonymous = await callJson({ url: ops }, "POST", "/drain");
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe("UNAUTHENTICATED");
    expect((await callJson({ url: ops }, "POST", "/drain", undefined, { authorization: "Bearer wrong" })).status).toBe(401);
    // Refused attempts changed nothing: n2 still runs what it ran.
    expect((await callJson({ url: ops }, "GET", "/readyz")).status).toBe(200);

    await waitFor(async () => (await owners()).includes("n2"), { timeoutMs: 15_000, message: "n2 runs a camera" });
    const res = await callJson({ url: ops }, "POST", "/drain", undefined, auth);
    expect(res.status).toBe(200);
    expect(res.body.released).toBeGreaterThan(0);
    await waitFor(async () => (await owners()).every((n) => n === "n1"), { timeoutMs: 15_000, message: "every camera on n1" });
    expect(JSON.stringify(n2.proc.lines)).not.toContain(TOKEN);
  });
});
