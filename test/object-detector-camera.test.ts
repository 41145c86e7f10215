// person_detection end to end: a real `camfleet detector` (with its object
// model) and a real `camfleet node`, a camera playing OpenCV's pedestrian
// clip vtest.avi (Debian's opencv-doc; msmpeg4, so transcoded to H.264 by the
// node's FFmpeg), real NATS. Every sampled frame is sent (motion gate off, 5
// fps), more than the model can do, so the detector is saturated all along;
// the camera's lease must keep renewing meanwhile.
//
// The stand-in RTSP camera (test/helpers/rtsp-camera.ts) serves only
// GStreamer test patterns, so the clip comes in as a file: source (played in
// real time, looped, like a camera).

import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { existsSync } from "node:fs";
import { expect, onTestFinished, test } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { BUCKETS } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { readDetections } from "./helpers/detections.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";

const CLIP = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

test("a clip of pedestrians → DetectionEvents labelled person on JetStream, while the saturated detector leaves lease renewals on time", async () => {
  if (!existsSync(CLIP)) throw new Error(`${CLIP} is missing: run scripts/setup.sh (Debian package opencv-doc)`);
  const port = await reservePort();
  const detector = runCamfleet(["detector"], { env: { DETECTOR_LISTEN: `127.0.0.1:${port}`, NODE_ID: "det" }, onCleanup: onTestFinished });
  await detector.waitForLog((l) => l.msg === LOG_MESSAGES.detectorListening);
  const nats = await startNats({ onCleanup: onTestFinished });
  const node = runCamfleet(["node"], {
    env: { NATS_URL: nats.url, NODE_ID: "obj-node", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true", AI_ENDPOINT: `127.0.0.1:${port}` },
    onCleanup: onTestFinished,
  });
  await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  const client = new ControlClient(nc);

  await client.putCamera({
    id: "street",
    url: `file://${CLIP}`,
    transcode: true,
    publish: "off",
    solutions: ["person_detection", "ppe_detection"],
    ai: { enabled: true, max_fps: 5, motion_gate: false, timeout_ms: 10_000, min_score: 0.4 },
  });
  const streaming = await waitFor(async () => {
    const s = await client.cameraStatus("street").catch(() => undefined);
    return s?.state === "STREAMING" ? s : undefined;
  }, { timeoutMs: 30_000, intervalMs: 200, message: "street STREAMING" });

  // Lease revisions while the detector works flat out: each renewal is a new revision.
  const leases = await new Kvm(nc).open(BUCKETS.leases);
  const revisions: number[] = [];
  const poll = setInterval(() => {
    void leases.get("street").then((e) => {
      if (e !== null && e.revision !== revisions.at(-1)) revisions.push(e.revision);
    }, () => {});
  }, 100);
  onTestFinished(() => clearInterval(poll));

  const people = await waitFor(async () => {
    const stored = await readDetections(nc, { camera: "street" });
    const withPeople = stored.filter((d) => d.event.detections.some((x) => x.label === "person"));
    return withPeople.length >= 4 ? withPeople : undefined;
  }, { timeoutMs: 60_000, intervalMs: 500, message: "4 DetectionEvents with a person" });
  // Renewed several times while saturated (every TTL/6 = 500 ms): the people may come within 1.5 s, so wait for the renewals too.
  await waitFor(() => revisions.length >= 4, { timeoutMs: 10_000, message: "4 lease revisions while the detector is saturated" });
  clearInterval(poll);

  for (const { event } of people) {
    expect(event.solutions).toContain("person_detection");
    expect(event.solutions).not.toContain("ppe_detection");
    for (const d of event.detections) {
      expect(d.label).toBe("person");
      // The camera's ai.min_score reaches the detector (its own default is 0.3).
      expect(d.score).toBeGreaterThanOrEqual(0.4);
      expect(d.box.x + d.box.w).toBeLessThanOrEqual(1.001);
      expect(d.box.y + d.box.h).toBeLessThanOrEqual(1.001);
    }
  }
  const status = await client.cameraStatus("street");
  // Saturated: frames were sampled faster than the model answered.
  expect(status.frames.sent_ai).toBeGreaterThan(0);
  expect(status.error?.code).toBe("DETECTOR_UNSUPPORTED");
  // Same lease all along (no fence, no takeover).
  expect(status.epoch).toBe(streaming.epoch);
  expect(status.state).toBe("STREAMING");
  expect(revisions.length).toBeGreaterThanOrEqual(4);
});
