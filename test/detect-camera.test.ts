// The detection path end to end: a real `camfleet node` running camera
// actors (FFmpeg), a real gRPC detector (`camfleet detector`, or a broken one
// in this process), real NATS; judged from the camera's status and the
// DetectionEvents stored in JetStream.

import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, onTestFinished, test } from "vitest";
import { serveDetector, type DetectorService } from "../proto/index.ts";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { detectionMsgId, StatusEventSchema, STREAMS, subjects, type CameraStatus } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { readDetections } from "./helpers/detections.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";

function startDetectorProcess(port: number) {
  const proc = runCamfleet(["detector"], { env: { DETECTOR_LISTEN: `127.0.0.1:${port}`, NODE_ID: "det" }, onCleanup: onTestFinished });
  return proc.waitForLog((l) => l.msg === LOG_MESSAGES.detectorListening).then(() => proc);
}

/** A camera node using the detector at `aiEndpoint`, and a client with a status poller. */
async function detectionNode(aiEndpoint: string) {
  const nats = await startNats({ onCleanup: onTestFinished });
  const node = runCamfleet(["node"], {
    env: { NATS_URL: nats.url, NODE_ID: "det-node", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true", AI_ENDPOINT: aiEndpoint },
    onCleanup: onTestFinished,
  });
  await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  const client = new ControlClient(nc);
  const waitStatus = (id: string, pred: (s: CameraStatus) => boolean, message: string, timeoutMs = 20_000) =>
    waitFor(async () => {
      const s = await client.cameraStatus(id).catch(() => undefined);
      return s !== undefined && pred(s) ? s : undefined;
    }, { timeoutMs, intervalMs: 100, message });
  return { nats, node, nc, client, waitStatus };
}

const AI = { enabled: true, max_fps: 5 };

describe("detections from a running camera", () => {
  test("frame ids never repeat within an epoch when the analysis restarts: new detections are stored, none dropped as a duplicate", async () => {
    const port = await reservePort();
    await startDetectorProcess(port);
    const { nc, client, waitStatus } = await detectionNode(`127.0.0.1:${port}`);
    await client.putCamera({ id: "pan", url: "testsrc:?size=320x240&rate=10", publish: "off", ai: AI });
    const first = await waitStatus("pan", (s) => s.state === "STREAMING" && s.frames.detections >= 4, "pan: 4 detection events");
    // New AI settings: the camera keeps its lease (same epoch) and starts a new analysis.
    const { camera } = await client.getCamera("pan");
    await client.putCamera({ ...camera, url: "testsrc:?size=320x240&rate=10", ai: { ...camera.ai, max_fps: 4 } });
    const before = (await readDetections(nc, { camera: "pan" })).length;
    await waitFor(async () => (await readDetections(nc, { camera: "pan" })).length >= before + 4, { timeoutMs: 20_000, message: "detections of the new analysis stored" });
    const stored = (await readDetections(nc, { camera: "pan" })).filter((d) => d.event.epoch === first.epoch);
    const ids = stored.map((d) => d.event.frame_id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(stored.map((d) => d.msgId)).size).toBe(stored.length);
    // Counting went on from where the first analysis stopped, not from 0 again.
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect((await client.cameraStatus("pan")).epoch).toBe(first.epoch);
  });

  test("moving pattern → motion events in JetStream; a still scene barely reaches the detector; detector killed and restarted → DETECTOR_UNAVAILABLE while video flows, then recovery", async () => {
    const port = await reservePort(); // named up front: the detector is restarted on it
    let detector = await startDetectorProcess(port);
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/still", width: 320, height: 240, fps: 10, static: true }] });
    const { nc, client, waitStatus } = await detectionNode(`127.0.0.1:${port}`);

    await client.putCamera({ id: "moving", url: "testsrc:?size=320x240&rate=10", publish: "off", tenant: "acme", site: "hq", ai: AI });
    await client.putCamera({ id: "still", url: cam.url("/still"), publish: "off", solutions: ["motion", "person"], ai: AI });

    // Moving: testsrc's clock digits change every second, and those frames are analysed and have
    // boxes; its smooth scrolling alone the gate learns as noise (proto/README.md).
    const moving = await waitStatus("moving", (s) => s.state === "STREAMING" && s.frames.detections >= 5, "moving: 5 detection events");
    expect(moving.frames.sent_ai).toBeGreaterThanOrEqual(moving.frames.detections);
    expect(moving.avg_inference_ms).toBeGreaterThan(0);
    expect(moving.error).toBeUndefined();
    const stored = await waitFor(async () => {
      const d = await readDetections(nc, { camera: "moving" });
      return d.length >= 5 ? d : undefined;
    }, { message: "5 detection events stored" });
    for (const { event, msgId, subject } of stored) {
      expect(subject).toBe(subjects.detections("moving", "acme", "hq"));
      expect(event).toMatchObject({ type: "detection", camera: "moving", tenant: "acme", site: "hq", node: "det-node", solutions: ["motion"] });
      expect(event.id).toBe(detectionMsgId("moving", event.epoch, event.frame_id));
      expect(msgId).toBe(event.id);
      expect(event.detections.length).toBeGreaterThan(0);
      expect(event.detections.every((d) => d.label === "motion" && d.box.x + d.box.w <= 1 && d.box.y + d.box.h <= 1)).toBe(true);
      expect(event.latency.e2e_ms).toBeGreaterThanOrEqual(event.latency.inference_ms);
      expect(event.motion?.score).toBeGreaterThan(0);
      expect(event.ts).toBeGreaterThanOrEqual(event.frame_ts);
    }
    expect(new Set(stored.map((d) => d.event.id)).size).toBe(stored.length);

    // Still: after the first frame the gate keeps everything from the detector; "person" is not offered.
    const still = await waitStatus("still", (s) => s.state === "STREAMING" && s.frames.skipped_motion >= 10, "still: 10 frames skipped", 30_000);
    expect(still.frames.sent_ai).toBeLessThanOrEqual(1);
    expect(still.frames.detections).toBe(0);
    expect(still.error).toMatchObject({ code: "DETECTOR_UNSUPPORTED" });
    expect(still.error?.detail).toContain('"person"');
    expect(await readDetections(nc, { camera: "still" })).toEqual([]);

    // Gate off (a changed spec restarts the analysis): now every sampled frame of the still scene is sent.
    await client.putCamera({ id: "still", url: cam.url("/still"), publish: "off", solutions: ["motion", "person"], ai: { ...AI, motion_gate: false } });
    const ungated = await waitStatus("still", (s) => s.state === "STREAMING" && s.frames.sent_ai >= 10, "still, gate off: 10 frames sent", 30_000);
    expect(ungated.frames.skipped_motion).toBe(0);
    expect(ungated.frames.detections).toBe(0); // the detector sees no change either

    // The detector dies: the camera says so, and its video goes on.
    detector.child.kill("SIGKILL");
    await detector.exited;
    const down = await waitStatus("moving", (s) => s.error?.code === "DETECTOR_UNAVAILABLE", "moving: DETECTOR_UNAVAILABLE");
    expect(down.state).toBe("STREAMING");
    expect(down.error?.detail).toContain(`127.0.0.1:${port}`);
    await waitStatus("moving", (s) => s.state === "STREAMING" && s.frames.received >= down.frames.received + 20 && s.error?.code === "DETECTOR_UNAVAILABLE", "video flows while the detector is down");
    const edge = await waitFor(async () => {
      const jsm = await jetstreamManager(nc);
      const last = await jsm.streams.getMessage(STREAMS.status, { last_by_subj: subjects.status("moving", "acme", "hq") });
      const e = last ? StatusEventSchema.parse(last.json()) : undefined;
      return e?.error?.code === "DETECTOR_UNAVAILABLE" ? e : undefined;
    }, { message: "a StatusEvent with DETECTOR_UNAVAILABLE" });
    expect(edge.state).toBe("STREAMING");

    // Back on the same port: the camera recovers by itself.
    detector = await startDetectorProcess(port);
    const back = await waitStatus("moving", (s) => s.error === undefined && s.frames.detections > down.frames.detections + 2, "moving: detections again after the detector returned", 20_000);
    expect(back.state).toBe("STREAMING");
  }, 180_000); // the waits inside have deadlines of their own; this only bounds their sum

  test("a detector answering garbage: DETECTOR_FAILED with the reason, nothing published, the camera keeps streaming", async () => {
    const liar: DetectorService = {
      listSolutions: () => ({ solutions: ["motion"], model: "liar" }),
      detect: () => ({ detections: [{ label: "motion", score: Number.NaN, box: { x: 0, y: 0, w: 2, h: 1 } }], model: "liar" }),
    };
    const server = await serveDetector(liar, { listen: "127.0.0.1:0" });
    onTestFinished(() => server.stop());
    const { nc, client, waitStatus } = await detectionNode(server.address);
    await client.putCamera({ id: "fooled", url: "testsrc:?size=320x240&rate=10", publish: "off", ai: AI });
    const failed = await waitStatus("fooled", (s) => s.error?.code === "DETECTOR_FAILED" && s.frames.sent_ai >= 3, "fooled: DETECTOR_FAILED");
    expect(failed.state).toBe("STREAMING");
    expect(failed.error?.detail).toContain("detections[0].score must be 0..1");
    await waitStatus("fooled", (s) => s.state === "STREAMING" && s.frames.received >= failed.frames.received + 20, "video goes on");
    expect(failed.frames.detections).toBe(0);
    expect(await readDetections(nc, { camera: "fooled" })).toEqual([]);
  }, 60_000);
});
