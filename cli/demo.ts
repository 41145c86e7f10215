// `camfleet up --demo`: a few synthetic cameras, FFmpeg's own lavfi sources
// (testsrc: URLs, allowed under `up`), so the dashboard shows video and
// detection boxes within seconds with no camera of one's own and no package
// beyond FFmpeg. They are removed again when `up` stops.

import { existsSync } from "node:fs";
import { ControlClient, type Logger, type NatsConnection } from "../runtime/index.ts";
import type { CameraSpecInput } from "../subjects/index.ts";

/**
 * A real CCTV clip of pedestrians (768x576, 10 fps, 79 s, MPEG-4) that
 * Debian's `opencv-doc` package ships. camfleet's own set-up installs it only
 * for the tests (274 MB installed); where it is present, the demo adds a
 * camera that plays it with `person_detection`.
 */
export const DEMO_PEOPLE_CLIP = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

const SYNTHETIC: readonly CameraSpecInput[] = [
  {
    id: "demo-moving",
    name: "Demo: a moving square, with motion boxes",
    url: "testsrc:?pattern=ball&size=640x360&rate=15",
    solutions: ["motion"],
    // Two frames a second to the reference detector: boxes follow the square without costing much CPU.
    ai: { enabled: true, max_fps: 2 },
    labels: { demo: "true" },
  },
  { id: "demo-pattern", name: "Demo: FFmpeg's test pattern", url: "testsrc:?size=640x360&rate=15", labels: { demo: "true" } },
  { id: "demo-bars", name: "Demo: colour bars (a still picture)", url: "testsrc:?pattern=bars&size=640x360&rate=10", labels: { demo: "true" } },
];

const PEOPLE: CameraSpecInput = {
  id: "demo-people",
  name: "Demo: pedestrians (opencv-doc's vtest.avi), with person boxes",
  url: `file://${DEMO_PEOPLE_CLIP}`,
  // Not H.264: re-encoded for WebRTC.
  transcode: true,
  solutions: ["person_detection"],
  // The model costs ~0.45 s of CPU a frame: one a second, whatever moves.
  ai: { enabled: true, max_fps: 1, motion_gate: false },
  labels: { demo: "true" },
};

/** The demo's cameras: the synthetic ones, and the pedestrians where their clip is installed. */
export const DEMO_CAMERAS: readonly CameraSpecInput[] = existsSync(DEMO_PEOPLE_CLIP) ? [...SYNTHETIC, PEOPLE] : SYNTHETIC;

/** Puts the demo cameras; returns how to take them away again. */
export async function addDemoCameras(nc: NatsConnection, logger: Logger): Promise<{ ids: string[]; remove: () => Promise<void> }> {
  const client = new ControlClient(nc, { timeoutMs: 5000 });
  for (const spec of DEMO_CAMERAS) await client.putCamera(spec);
  const ids = DEMO_CAMERAS.map((c) => c.id);
  logger.info({ cameras: ids }, "demo cameras added");
  return {
    ids,
    remove: async () => {
      // Best effort, in parallel: a stop must not hang on a cluster that is already going away.
      const results = await Promise.allSettled(ids.map((id) => client.deleteCamera(id)));
      const failed = results.flatMap((r, i) => (r.status === "rejected" ? [ids[i]] : []));
      if (failed.length > 0) logger.warn({ cameras: failed }, "could not remove the demo cameras; `camfleet camera rm` them");
      client.close();
    },
  };
}
