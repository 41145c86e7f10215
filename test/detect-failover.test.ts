// Detections across a node kill: two real camera nodes, the reference
// detector, a moving test pattern. The owner is killed with SIGKILL; the
// survivor takes the camera over at a new epoch. Every stored detection id is
// unique, frame ids are unique within each epoch, and the new owner's first
// status event says it took over from the dead node.

import { describe, expect, onTestFinished, test } from "vitest";
import { ReferenceDetector, serveDetector } from "../proto/index.ts";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { readDetections } from "./helpers/detections.ts";
import { connectTestClient, readStatusEvents } from "./helpers/fleet.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

describe("detections across a node kill", () => {
  test("the survivor goes on at a higher epoch: ids unique for good, frame ids unique per epoch, failover announced", async () => {
    const detector = await serveDetector(new ReferenceDetector(), { listen: "127.0.0.1:0" });
    onTestFinished(() => detector.stop());
    const nats = await startNats({ onCleanup: onTestFinished });
    const nodes = new Map<string, CamfleetProcess>();
    for (const id of ["k1", "k2"]) {
      const proc = runCamfleet(["node"], {
        env: { NATS_URL: nats.url, NODE_ID: id, HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true", AI_ENDPOINT: detector.address },
        onCleanup: onTestFinished,
      });
      nodes.set(id, proc);
    }
    await Promise.all([...nodes.values()].map((p) => p.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady)));
    const nc = await connectTestClient([nats.url], onTestFinished);
    const client = new ControlClient(nc);
    await client.putCamera({ id: "kept", url: "testsrc:?size=320x240&rate=10", publish: "off", ai: { enabled: true, max_fps: 5, motion_gate: false } });

    const first = await waitFor(async () => {
      const s = await client.cameraStatus("kept").catch(() => undefined);
      return s !== undefined && s.frames.detections >= 5 ? s : undefined;
    }, { timeoutMs: 30_000, message: "5 detections from the first owner" });
    const owner = nodes.get(first.node)!;
    const survivor = first.node === "k1" ? "k2" : "k1";
    owner.child.kill("SIGKILL");
    await owner.exited;

    const second = await waitFor(async () => {
      const s = await client.cameraStatus("kept").catch(() => undefined);
      return s !== undefined && s.node === survivor && s.frames.detections >= 5 ? s : undefined;
    }, { timeoutMs: 30_000, message: "5 detections from the survivor" });
    expect(second.epoch).toBeGreaterThan(first.epoch);

    const stored = await waitFor(async () => {
      const d = await readDetections(nc, { camera: "kept" });
      return d.filter((e) => e.event.epoch === second.epoch).length >= 5 ? d : undefined;
    }, { message: "the survivor's detections stored" });
    const ids = stored.map((d) => d.event.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const epoch of new Set(stored.map((d) => d.event.epoch))) {
      const frames = stored.filter((d) => d.event.epoch === epoch).map((d) => d.event.frame_id);
      expect(new Set(frames).size).toBe(frames.length);
    }
    // Each epoch is one node's: the dead owner's ids and the survivor's never meet.
    expect(stored.filter((d) => d.event.epoch === first.epoch).every((d) => d.event.node === first.node)).toBe(true);
    expect(stored.filter((d) => d.event.epoch === second.epoch).every((d) => d.event.node === survivor)).toBe(true);

    const status = (await readStatusEvents(nc)).filter((e) => e.camera === "kept" && e.epoch === second.epoch);
    expect(status[0]).toMatchObject({ node: survivor, state: "CONNECTING", previous_node: first.node, reason: "failover" });
  }, 120_000);
});
