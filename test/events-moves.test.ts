// Status events when a camera changes owner, judged from CAMFLEET_STATUS:
// real sim nodes on a real nats-server. A rebalance and a drain leave a
// STOPPED with the reason on the old owner's side, and the new owner's first
// event names previous_node and reason; a kill -9 is a failover. Then edges
// that happen while NATS is away reach the stream once it is back.

import { describe, expect, onTestFinished, test } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import type { StatusEvent } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { cameraTrail, cameraIds, connectTestClient, openLeases, putCameras, readOwnership, readStatusEvents, startFleetNode, type FleetNodeProcess } from "./helpers/fleet.ts";
import { callJson } from "./helpers/http.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

/** The value of a metric in Prometheus text, summed over the series that match `labels`. */
function metric(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels !== "" && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** The first event a node published for a camera at an epoch. */
function firstOf(events: readonly StatusEvent[], camera: string, epoch: number): StatusEvent | undefined {
  return events.find((e) => e.camera === camera && e.epoch === epoch);
}

/** Checks every move of `cameras` onto `to` from `from`: old owner's STOPPED carries the reason, new owner's first event names both. */
function expectMoves(events: readonly StatusEvent[], cameras: readonly string[], from: string, to: string, reason: "drain" | "rebalance" | "failover", epochs: ReadonlyMap<string, number>) {
  for (const camera of cameras) {
    const epoch = epochs.get(camera)!;
    const first = firstOf(events, camera, epoch);
    const trail = events.filter((e) => e.camera === camera).map((e) => `${e.node}@${e.epoch} ${e.state}/${e.trigger}${e.reason ? ` ${e.reason}` : ""}`).join(", ");
    expect(first, `${camera}: first event at epoch ${epoch}; trail: ${trail}`).toMatchObject({ node: to, state: "CONNECTING", previous_node: from, reason });
    // Only the first event of the epoch says it.
    expect(events.filter((e) => e.camera === camera && e.epoch === epoch && e.previous_node !== undefined)).toHaveLength(1);
    const before = events.filter((e) => e.camera === camera && e.node === from && e.epoch < epoch).at(-1);
    if (reason === "failover") expect(before?.state, `${camera}: a killed owner says nothing more`).not.toBe("STOPPED");
    else expect(before, `${camera}: the old owner's last word`).toMatchObject({ state: "STOPPED", reason });
  }
}

async function opsUrl(node: FleetNodeProcess): Promise<{ url: string }> {
  const line = await node.proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps);
  return { url: String(line.url) };
}

describe("status events for a change of owner", () => {
  test("rebalance, drain and kill -9: the old owner's STOPPED says why, the new owner's first event names previous_node and reason", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const n1 = await startFleetNode({ id: "n1", natsUrls: [nats.url], onCleanup: onTestFinished });
    const nc = await connectTestClient([nats.url], onTestFinished);
    const kv = await openLeases(nc);
    const cameras = await putCameras(nc, cameraIds(4));
    await waitFor(async () => [...(await readOwnership(kv, cameras)).values()].filter((o) => o.node === "n1" && o.epoch > 0).length === 4, { message: "n1 owns all 4" });

    // Rebalance: n2 joins and placement moves some cameras to it.
    const n2 = await startFleetNode({ id: "n2", natsUrls: [nats.url], onCleanup: onTestFinished });
    const rebalanced = await waitFor(async () => {
      const owners = await readOwnership(kv, cameras);
      const moved = cameras.filter((c) => owners.get(c)?.node === "n2" && owners.get(c)!.epoch > 0);
      return moved.length > 0 && [...owners.values()].every((o) => o.epoch > 0) ? { moved, owners } : undefined;
    }, { timeoutMs: 20_000, message: "some cameras rebalanced to n2" });
    await waitFor(async () => (statusCache = await readStatusEvents(nc)) && rebalanced.moved.every((c) => firstOf(statusCache, c, rebalanced.owners.get(c)!.epoch) !== undefined), {
      timeoutMs: 10_000,
      message: "n2's first events stored",
    });
    // On failure, the nodes' own account of each camera says more than the events.
    try {
      expectMoves(statusCache, rebalanced.moved, "n1", "n2", "rebalance", new Map(rebalanced.moved.map((c) => [c, rebalanced.owners.get(c)!.epoch])));
    } catch (err) {
      console.log(cameraTrail([n1, n2], rebalanced.moved, 12));
      throw err;
    }

    // Drain n2: its cameras go back to n1.
    expect((await callJson(await opsUrl(n2), "POST", "/drain")).status).toBe(200);
    const drained = await waitFor(async () => {
      const owners = await readOwnership(kv, rebalanced.moved);
      return rebalanced.moved.every((c) => owners.get(c)?.node === "n1" && owners.get(c)!.epoch > 0) ? owners : undefined;
    }, { timeoutMs: 20_000, message: "n2's cameras back on n1" });
    await waitFor(async () => (statusCache = await readStatusEvents(nc)) && rebalanced.moved.every((c) => firstOf(statusCache, c, drained.get(c)!.epoch) !== undefined), {
      timeoutMs: 10_000,
      message: "n1's first events after the drain stored",
    });
    expectMoves(statusCache, rebalanced.moved, "n2", "n1", "drain", new Map(rebalanced.moved.map((c) => [c, drained.get(c)!.epoch])));

    // kill -9 n1: n3 takes every camera over.
    const n3 = await startFleetNode({ id: "n3", natsUrls: [nats.url], onCleanup: onTestFinished });
    // n3 gets half by rebalance first (n2 is drained: it claims nothing); only the ones n1 still has when it dies fail over.
    const atKill = await waitFor(async () => {
      const owners = await readOwnership(kv, cameras);
      const on = (node: string) => cameras.filter((c) => owners.get(c)?.node === node && owners.get(c)!.epoch > 0).length;
      return on("n1") === 2 && on("n3") === 2 ? owners : undefined;
    }, { timeoutMs: 20_000, message: "n1 and n3 own two cameras each" });
    const onN1 = cameras.filter((c) => atKill.get(c)?.node === "n1");
    n1.proc.child.kill("SIGKILL");
    await n1.proc.exited;
    const failedOver = await waitFor(async () => {
      const owners = await readOwnership(kv, onN1);
      return onN1.every((c) => owners.get(c)?.node === "n3" && owners.get(c)!.epoch > 0) ? owners : undefined;
    }, { timeoutMs: 20_000, message: "n1's cameras taken over by n3" });
    await waitFor(async () => (statusCache = await readStatusEvents(nc)) && onN1.every((c) => firstOf(statusCache, c, failedOver.get(c)!.epoch) !== undefined), {
      timeoutMs: 10_000,
      message: "n3's first events stored",
    });
    expectMoves(statusCache, onN1, "n1", "n3", "failover", new Map(onN1.map((c) => [c, failedOver.get(c)!.epoch])));
    expect(n2.alive() && n3.alive()).toBe(true);
  }, 120_000);

  test("an edge that happens while NATS is away is stored once NATS is back, once", async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/cam", width: 320, height: 240, fps: 10 }] });
    const nats = await startNats({ onCleanup: onTestFinished });
    // A long lease: the outage must not fence the camera (its events would be dropped then, by design).
    const node = runCamfleet(["node"], {
      env: { NATS_URL: nats.url, NODE_ID: "out", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", LEASE_TTL_MS: "30000", LOG_LEVEL: "debug" },
      onCleanup: onTestFinished,
    });
    const ops = String((await node.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps)).url);
    await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    const nc = await connectTestClient([nats.url], onTestFinished);
    const client = new ControlClient(nc);
    await client.putCamera({ id: "edge", url: cam.url("/cam"), publish: "off" });
    const streaming = await waitFor(async () => {
      const s = await client.cameraStatus("edge").catch(() => undefined);
      return s?.state === "STREAMING" ? s : undefined;
    }, { timeoutMs: 20_000, message: "edge STREAMING" });

    const errorsBefore = metric(await (await fetch(`${ops}/metrics`)).text(), "camfleet_stream_errors_total", 'camera="edge"');
    await nats.server.stop();
    const downAt = Date.now();
    await cam.kill(); // the camera loses power while the node cannot tell anyone
    // The actor notices (FFmpeg ends) while NATS is still down: the node's own /metrics say so, and that the edge waits in its buffer.
    await waitFor(async () => {
      const text = await (await fetch(`${ops}/metrics`)).text();
      return metric(text, "camfleet_stream_errors_total", 'camera="edge"') > errorsBefore && metric(text, "camfleet_status_buffered") >= 2;
    }, { timeoutMs: 15_000, message: "the camera down and its edge buffered while NATS is away" });
    const upAt = Date.now();
    await nats.server.start();

    let all: StatusEvent[] = [];
    const events = await waitFor(async () => {
      all = (await readStatusEvents(nc).catch(() => all)).filter((e) => e.camera === "edge");
      return all.some((e) => e.epoch === streaming.epoch && e.trigger === "edge" && e.state === "ERROR" && e.ts >= downAt && e.ts < upAt) ? all : undefined;
    }, { timeoutMs: 30_000, message: "the outage's edge stored after NATS came back" }).catch((err: unknown) => {
      const trail = all.map((e) => `${e.node}@${e.epoch} ${e.state}/${e.trigger} ${e.ts - downAt}ms ${e.error?.code ?? ""}`).join("\n");
      const log = node.lines.filter((l) => Date.parse(String(l.time)) >= downAt - 100 && Number(l.level) >= 30).map((l) => `${l.time} ${l.msg} ${l.camera ?? ""}`).join("\n");
      throw new Error(`${String(err)}\nstored (ts relative to NATS down, up at ${upAt - downAt}ms):\n${trail}\nnode log:\n${log}`);
    });
    const during = events.filter((e) => e.trigger === "edge" && e.ts >= downAt && e.ts < upAt);
    expect(during.length).toBeGreaterThan(0);
    expect(during.some((e) => e.state === "ERROR")).toBe(true);
    // Stored in the order they happened, each once.
    const ts = events.map((e) => e.ts);
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
    expect(new Set(events.map((e) => JSON.stringify(e))).size).toBe(events.length);
  }, 90_000);
});

let statusCache: StatusEvent[] = [];
