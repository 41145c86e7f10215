import { readdirSync, readFileSync } from "node:fs";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import type { CameraStatus } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

/** pids of ffmpeg processes whose command line mentions `needle`. */
function ffmpegWith(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z") continue;
      if (cmd[0]?.endsWith("ffmpeg") && cmd.some((a) => a.includes(needle))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** A node running real camera actors, and a client to drive it. */
async function cameraNode() {
  const nats = await startNats({ onCleanup: onTestFinished });
  const node = runCamfleet(["node"], {
    env: { NATS_URL: nats.url, NODE_ID: "cam-node", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera" },
    onCleanup: onTestFinished,
  });
  await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  const client = new ControlClient(nc);
  const status = (id: string) => client.cameraStatus(id).catch(() => undefined);
  const waitState = (id: string, pred: (s: CameraStatus) => boolean, message: string, timeoutMs = 20_000) =>
    waitFor(async () => {
      const s = await status(id);
      return s !== undefined && pred(s) ? s : undefined;
    }, { timeoutMs, intervalMs: 100, message });
  return { client, waitState, node };
}

/**
 * Each test's deadline is what its waits may add up to: the set-up (the RTSP
 * camera's 10 s to be ready, nats-server's 15 s, the node's 15 s to log
 * "node ready") plus each of its own waits' deadline, so a slow machine
 * fails a wait with its message rather than the test with a bare timeout.
 */
const SETUP_MS = 10_000 + 15_000 + 15_000;
const WAIT_MS = 20_000; // waitState's default

describe("camera actor against a real RTSP camera", () => {
  // STREAMING, frames, ERROR, restart (stop 5 s, ready 10 s), STREAMING again (40 s), ffmpeg gone (10 s).
  it("streams with the source's size and rate, recovers when the camera comes back, and leaves no ffmpeg after stop", { timeout: SETUP_MS + 3 * WAIT_MS + 15_000 + 40_000 + 10_000 }, async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/door", width: 640, height: 360, fps: 15 }] });
    const { client, waitState } = await cameraNode();
    await client.putCamera({ id: "door", url: cam.url("/door") });

    const streaming = await waitState("door", (s) => s.state === "STREAMING", "door STREAMING");
    expect(streaming.stream).toMatchObject({ codec: "h264", width: 640, height: 360, fps: 15 });
    expect(ffmpegWith(`:${cam.port}/door`)).toHaveLength(1);
    await waitState("door", (s) => s.frames.received > 15, "frames counted");

    await cam.kill();
    const failed = await waitState("door", (s) => s.state === "ERROR", "door ERROR after the camera died");
    expect(["FFMPEG_EXITED", "SOURCE_UNREACHABLE", "STREAM_STALLED"]).toContain(failed.error?.code);
    expect(failed.error?.retry_in_ms).toBeGreaterThan(0);

    await cam.restart();
    await waitState("door", (s) => s.state === "STREAMING", "door STREAMING again after the camera returned", 40_000);

    await client.stopCamera("door");
    await waitFor(() => ffmpegWith(`:${cam.port}/door`).length === 0, { timeoutMs: 10_000, message: "ffmpeg of door gone after stop" });
  });

  // STREAMING, ERROR (15 s), STREAMING again (40 s).
  it("a frozen camera reads as STREAM_STALLED, and streams again once it thaws", { timeout: SETUP_MS + WAIT_MS + 15_000 + 40_000 }, async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/yard", width: 320, height: 240, fps: 10 }] });
    const { client, waitState } = await cameraNode();
    await client.putCamera({ id: "yard", url: cam.url("/yard") });
    await waitState("yard", (s) => s.state === "STREAMING", "yard STREAMING");
    process.kill(cam.pid!, "SIGSTOP");
    onTestFinished(() => {
      if (cam.pid !== undefined) process.kill(cam.pid, "SIGCONT");
    });
    const stalled = await waitState("yard", (s) => s.state === "ERROR", "yard ERROR while frozen", 15_000);
    expect(stalled.error?.code).toBe("STREAM_STALLED");
    process.kill(cam.pid!, "SIGCONT");
    await waitState("yard", (s) => s.state === "STREAMING", "yard STREAMING after thawing", 40_000);
  });

  // ERROR, STREAMING with the right password (40 s).
  it("a wrong password reports SOURCE_AUTH without ever showing the password", { timeout: SETUP_MS + WAIT_MS + 40_000 }, async () => {
    const cam = await startRtspCamera({
      onCleanup: onTestFinished,
      mounts: [{ path: "/gate" }],
      credentials: { user: "admin", password: "right-one" },
    });
    const { client, waitState, node } = await cameraNode();
    await client.putCamera({ id: "gate", url: cam.url("/gate", { credentials: { user: "admin", password: "wrong-pw" } }) });
    const failed = await waitState("gate", (s) => s.state === "ERROR", "gate ERROR");
    expect(failed.error?.code).toBe("SOURCE_AUTH");
    expect(JSON.stringify(failed)).not.toContain("wrong-pw");
    expect(JSON.stringify(node.lines)).not.toContain("wrong-pw");

    await client.putCamera({ id: "gate", url: cam.url("/gate", { withCredentials: true }) });
    await waitState("gate", (s) => s.state === "STREAMING", "gate STREAMING with the right password", 40_000);
  });

  // ERROR, STREAMING with transcode (40 s), frames.
  it("an H.265 camera is UNSUPPORTED_CODEC until its spec turns transcode on, then streams", { timeout: SETUP_MS + WAIT_MS + 40_000 + WAIT_MS }, async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/hevc", codec: "h265", width: 320, height: 240, fps: 10 }] });
    const { client, waitState } = await cameraNode();
    await client.putCamera({ id: "hevc", url: cam.url("/hevc") });
    const refused = await waitState("hevc", (s) => s.state === "ERROR", "hevc ERROR without transcode");
    expect(refused.error).toMatchObject({ code: "UNSUPPORTED_CODEC", detail: "source video is hevc, not H.264, and transcoding is off" });

    const { camera } = await client.putCamera({ id: "hevc", url: cam.url("/hevc"), transcode: true });
    expect(camera.transcode).toBe(true);
    const streaming = await waitState("hevc", (s) => s.state === "STREAMING", "hevc STREAMING with transcode", 40_000);
    // The source's own stream is reported; what leaves the camera is H.264 (checked at RTP level in camera-ingest.test.ts).
    expect(streaming.stream).toMatchObject({ codec: "hevc", width: 320, height: 240 });
    await waitState("hevc", (s) => s.frames.received > 10, "transcoded frames counted");
    expect(ffmpegWith(`:${cam.port}/hevc`)).toHaveLength(1);
  });

  // STREAMING, renamed (5 s), frames, FFmpeg replaced (15 s), STREAMING on /b.
  it("a changed spec restarts only what changed: a new name keeps FFmpeg, a new URL replaces it", { timeout: SETUP_MS + WAIT_MS + 5_000 + WAIT_MS + 15_000 + WAIT_MS }, async () => {
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/a", width: 320, height: 240, fps: 10 }, { path: "/b", width: 320, height: 240, fps: 10 }] });
    const { client, waitState } = await cameraNode();
    await client.putCamera({ id: "hall", url: cam.url("/a") });
    const first = await waitState("hall", (s) => s.state === "STREAMING", "hall STREAMING on /a");
    const [pidA] = ffmpegWith(`:${cam.port}/a`);
    expect(pidA).toBeDefined();

    // Not a source setting: the actor takes the spec, FFmpeg and the state stay.
    await client.putCamera({ id: "hall", url: cam.url("/a"), name: "Front hall", labels: { floor: "1" } });
    await waitFor(async () => (await client.getCamera("hall")).camera.name === "Front hall", { timeoutMs: 5_000, message: "renamed spec stored" });
    const renamed = await waitState("hall", (s) => s.frames.received > first.frames.received + 10, "hall keeps streaming after the rename");
    expect(renamed.state).toBe("STREAMING");
    expect(renamed.since_ts).toBe(first.since_ts);
    expect(ffmpegWith(`:${cam.port}/a`)).toEqual([pidA]);

    // A source setting: only the ingest restarts, on the new URL.
    await client.putCamera({ id: "hall", url: cam.url("/b"), name: "Front hall" });
    await waitFor(() => ffmpegWith(`:${cam.port}/b`).length === 1 && ffmpegWith(`:${cam.port}/a`).length === 0, {
      timeoutMs: 15_000,
      message: "FFmpeg of /a replaced by one of /b",
    });
    await waitState("hall", (s) => s.state === "STREAMING" && s.since_ts > first.since_ts, "hall STREAMING on /b");
  });
});
