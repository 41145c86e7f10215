// The per-camera metrics of the contract (docs/contract.md, "Metrics") on a
// real node's /metrics: a real RTSP camera, real FFmpeg, the reference
// detector for the camera with analysis on. Every series exists from the
// camera's first second, the frame age is computed at each scrape, and every
// series of a camera goes when it stops on the node.

import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { COUNTED_ERROR_CODES } from "../actors/camera/metrics.ts";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { reservePort } from "./helpers/ports.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format → samples (no escapes in camfleet's label values). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The per-camera series a camera must have, as [name, extra labels]. */
const PER_CAMERA: Array<[string, Record<string, string>]> = [
  ["camfleet_stream_up", {}],
  ["camfleet_last_frame_age_seconds", {}],
  ["camfleet_stream_fps", {}],
  ...COUNTED_ERROR_CODES.map((code): [string, Record<string, string>] => ["camfleet_stream_errors_total", { code }]),
  ["camfleet_inference_latency_seconds_count", {}],
  ["camfleet_e2e_latency_seconds_count", {}],
  ["camfleet_detections_published_total", {}],
  ["camfleet_frames_skipped_motion_total", {}],
];

describe("per-camera metrics", () => {
  it("exist for every running camera from its first second (analysis off and on), age is fresh at each scrape, and all go when the camera stops", { timeout: 150_000 }, async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/door", width: 320, height: 240, fps: 15 }] });
    const detectorPort = await reservePort();
    const detector = runCamfleet(["detector"], { env: { DETECTOR_LISTEN: `127.0.0.1:${detectorPort}`, NODE_ID: "det" }, onCleanup: onTestFinished });
    await detector.waitForLog((l) => l.msg === LOG_MESSAGES.detectorListening);
    const node = await startFleetNode({
      id: "m1",
      natsUrls: [nats.url],
      env: { CAMFLEET_ACTOR_KIND: "camera", AI_ENDPOINT: `127.0.0.1:${detectorPort}` },
      onCleanup: onTestFinished,
    });
    const ops = String((await node.proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps)).url);
    const scrape = async () => parseMetrics(await (await fetch(`${ops}/metrics`)).text());
    const find = (samples: Sample[], name: string, labels: Record<string, string>) =>
      samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    const missing = (samples: Sample[], camera: string) =>
      PER_CAMERA.filter(([name, extra]) => find(samples, name, { camera, ...extra }) === undefined).map(([name, extra]) => `${name}${JSON.stringify(extra)}`);

    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    await client.putCamera({ id: "plain", url: cam.url("/door"), publish: "off" });
    await client.putCamera({ id: "smart", url: cam.url("/door"), publish: "off", solutions: ["motion"], ai: { enabled: true, max_fps: 5 } });
    // A camera that never streams has its series too.
    await client.putCamera({ id: "dark", url: cam.url("/door").replace("/door", "/missing"), publish: "off" });

    for (const camera of ["plain", "smart", "dark"]) {
      await node.proc.waitForLog((l) => l.msg === LOG_MESSAGES.claimedCamera && l.camera === camera, 15_000);
      // The first scrape after the claim: every series, counters at 0, long before the first frame or
      // detection (the actor makes them as it starts; the deadline only covers a slow scrape on a loaded host).
      const first = await waitFor(async () => {
        const s = await scrape();
        return missing(s, camera).length === 0 ? s : undefined;
      }, { timeoutMs: 3000, intervalMs: 50, message: `every series of ${camera} right after its claim` }).catch(async (err: unknown) => {
        throw new Error(`${camera} lacks ${missing(await scrape(), camera).join(", ")}`, { cause: err });
      });
      // smart may have analysed frames by now (the claims came together, the checks one by one).
      if (camera !== "smart") {
        expect(find(first, "camfleet_detections_published_total", { camera })?.value).toBe(0);
        expect(find(first, "camfleet_inference_latency_seconds_count", { camera })?.value).toBe(0);
      }
      expect(find(first, "camfleet_stream_errors_total", { camera, code: "UNSUPPORTED_CODEC" })?.value).toBe(0);
    }

    // Streaming: up, fps announced, and the age fresh at every scrape (computed then, not at the last status event).
    const streaming = await waitFor(async () => {
      const s = await scrape();
      return find(s, "camfleet_stream_up", { camera: "plain" })?.value === 1 ? s : undefined;
    }, { timeoutMs: 30_000, message: "plain up" });
    expect(find(streaming, "camfleet_stream_fps", { camera: "plain" })?.value).toBe(15);
    const ages: number[] = [];
    await waitFor(async () => {
      const age = find(await scrape(), "camfleet_last_frame_age_seconds", { camera: "plain" })!.value;
      ages.push(age);
      return new Set(ages).size >= 3;
    }, { timeoutMs: 3000, intervalMs: 150, message: "three different frame ages within 3 s (status summaries come every 5 s)" });
    expect(Math.max(...ages)).toBeLessThan(1.5); // progress comes about every 0.5 s
    // The camera that never streams: its age grows from its start on the node.
    // (Polled: with FFmpeg's fast start plain may be up within a second of dark's start.)
    const darkAges: number[] = [];
    await waitFor(async () => {
      darkAges.push(find(await scrape(), "camfleet_last_frame_age_seconds", { camera: "dark" })!.value);
      return darkAges.at(-1)! > 1;
    }, { timeoutMs: 5000, intervalMs: 100, message: "dark's frame age passing 1 s" });
    expect(darkAges.every((age, i) => i === 0 || age >= darkAges[i - 1]!)).toBe(true);
    expect(find(await scrape(), "camfleet_stream_up", { camera: "dark" })?.value).toBe(0);

    // Analysis on: detections counted; off: still there, at 0.
    const analysed = await waitFor(async () => {
      const s = await scrape();
      return (find(s, "camfleet_detections_published_total", { camera: "smart" })?.value ?? 0) > 0 ? s : undefined;
    }, { timeoutMs: 30_000, message: "smart publishes detections" });
    expect(find(analysed, "camfleet_inference_latency_seconds_count", { camera: "smart" })!.value).toBeGreaterThan(0);
    expect(find(analysed, "camfleet_detections_published_total", { camera: "plain" })?.value).toBe(0);
    expect(find(analysed, "camfleet_inference_latency_seconds_count", { camera: "plain" })?.value).toBe(0);

    // Stopped on this node: none of its series is left; the others stay.
    await client.stopCamera("smart");
    await waitFor(async () => (await scrape()).every((s) => s.labels.camera !== "smart"), { timeoutMs: 10_000, message: "smart's series gone" });
    const after = await scrape();
    expect(missing(after, "plain")).toEqual([]);
    expect(missing(after, "dark")).toEqual([]);

    // Handed over (drain): the new owner has every series, the old one none.
    const second = await startFleetNode({ id: "m2", natsUrls: [nats.url], env: { CAMFLEET_ACTOR_KIND: "camera", AI_ENDPOINT: `127.0.0.1:${detectorPort}` }, onCleanup: onTestFinished });
    const ops2 = String((await second.proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps)).url);
    expect(await client.drainNode("m1")).toEqual({ released: 2 });
    await waitFor(async () => {
      const s2 = parseMetrics(await (await fetch(`${ops2}/metrics`)).text());
      return missing(s2, "plain").length === 0 && missing(s2, "dark").length === 0;
    }, { timeoutMs: 20_000, message: "plain and dark with all their series on m2" });
    expect((await scrape()).filter((s) => s.labels.camera !== undefined).map((s) => `${s.name}{camera=${s.labels.camera}}`)).toEqual([]);
  });
});
