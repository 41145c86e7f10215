// The single worker's REST routes on the gateway, against a real nats-server,
// a real `camfleet node` (sim cameras, and one real FFmpeg camera), and the
// gateway in-process; the worker's Python client flow with Debian's requests.

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it, onTestFinished } from "vitest";
import type { Gateway } from "../gateway/index.ts";
import { ConfigError, LOG_MESSAGES, loadConfig } from "../runtime/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { connectTestClient, readStatusEvents, startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { callJson, type Json } from "./helpers/http.ts";
import { waitFor } from "./helpers/wait.ts";

const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
const CLIENT = fileURLToPath(new URL("./fixtures/legacy-client.py", import.meta.url));

async function cluster(nodeEnv: Record<string, string> = {}) {
  const nats = await startNats({ onCleanup: onTestFinished });
  const node = (await startFleetNode({ id: "n1", natsUrls: [nats.url], env: nodeEnv, onCleanup: onTestFinished })).proc;
  const gateway = (env: Record<string, string> = {}): Promise<Gateway> => startTestGateway({ natsUrl: nats.url, env, onCleanup: onTestFinished });
  return { nats, node, gateway };
}

const call = callJson;

const status = (gw: Gateway, id: string) => call(gw, "GET", `/cameras/${id}/status`);

describe("legacy routes: the single worker's shapes", () => {
  it("GET / describes the worker: version, node and camera counts, capabilities, public URL; a browser gets JSON too (no dashboard yet)", async () => {
    const { gateway } = await cluster();
    const plain = await gateway();
    const withMtx = await gateway({ MEDIAMTX_HLS: "http://mtx.example:8888/", MEDIAMTX_RTSP: "rtsp://mtx.example:8554", GATEWAY_URL: "http://cams.example:8080/" });

    // The answering node lists itself once its heartbeat has gone round.
    const info = await waitFor(async () => {
      const r = await call(plain, "GET", "/");
      return r.body.nodes === 1 ? r : undefined;
    }, { message: "GET / counts the node" });
    expect(info.status).toBe(200);
    expect(info.body).toEqual({
      name: "camfleet",
      version: VERSION,
      gateway: expect.stringMatching(/^gw-/),
      url: plain.publicUrl,
      nodes: 1,
      cameras: 0,
      // No detector was given to this gateway: what it offers is unknown.
      capabilities: { solutions: null, webrtc: true, hls: false, rtsp: false },
    });
    expect((await call(plain, "POST", "/cameras/a1/start", { stream_url: "rtsp://10.0.0.1/a", solutions: [] })).status).toBe(200);
    expect((await call(plain, "GET", "/")).body.cameras).toBe(1);

    // A browser (Accept: text/html) gets the dashboard there (test/dashboard.test.ts); API clients the JSON.
    const mtx = await call(withMtx, "GET", "/", undefined, { accept: "application/json" });
    expect(mtx.status).toBe(200);
    expect(mtx.headers.get("content-type")).toMatch(/^application\/json/);
    expect(mtx.body.capabilities).toEqual({ solutions: null, webrtc: true, hls: true, rtsp: true });
    expect(mtx.body.url).toBe("http://cams.example:8080");
  });

  it("start creates a camera (AI on with solutions) with a redacted stream_url, runs it, reports its status, lists it, stops it", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();

    const started = await call(gw, "POST", "/cameras/door/start", { stream_url: "rtsp://admin:s3cret@10.0.0.9:554/live?token=abc", solutions: ["motion"] });
    expect(started.status).toBe(200);
    expect(started.body).toEqual({ camera_id: "door", status: "started", stream_url: "rtsp://***@10.0.0.9:554/live?token=***", message: "camera door created and started" });
    expect(JSON.stringify(started.body)).not.toContain("s3cret");
    const spec = (await call(gw, "GET", "/cameras/door")).body;
    expect(spec).toMatchObject({ id: "door", enabled: true, solutions: ["motion"], ai: { enabled: true } });

    const running = await waitFor(async () => {
      const s = await status(gw, "door");
      return s.body.active === true && s.body.stream_info.connected === true ? s : undefined;
    }, { timeoutMs: 10_000, message: "door active and streaming" });
    expect(running.status).toBe(200);
    expect(running.body).toMatchObject({
      camera_id: "door",
      active: true,
      stream_info: { fps: 25, width: 1280, height: 720, connected: true },
      processing_info: { frames_sent_ai: 0, avg_process_time: "0ms" },
      webrtc_info: { session_id: null, active: false, uptime: "0s" },
      state: "STREAMING",
      node: "n1",
      error: null,
      viewers: 0,
    });
    expect(running.body.epoch).toBeGreaterThan(0);
    expect(running.body.processing_info.frames_processed).toBeGreaterThanOrEqual(0);

    const again = await call(gw, "POST", "/cameras/door/start", { stream_url: "rtsp://admin:s3cret@10.0.0.9:554/live?token=abc", solutions: ["motion"] });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: "started", message: "camera door is already running" });

    // A second camera without solutions: analysis off.
    expect((await call(gw, "POST", "/cameras/yard/start", { stream_url: "rtsp://10.0.0.10/yard" })).status).toBe(200);
    expect((await call(gw, "GET", "/cameras/yard")).body.ai.enabled).toBe(false);
    await waitFor(async () => (await status(gw, "yard")).body.active === true, { timeoutMs: 10_000, message: "yard active" });

    const list = await call(gw, "GET", "/cameras");
    expect(list.status).toBe(200);
    expect(list.body.total).toBe(2);
    expect(list.body.cameras).toEqual([
      expect.objectContaining({ camera_id: "door", stream_url: "rtsp://***@10.0.0.9:554/live?token=***", active: true, state: "STREAMING", node: "n1", solutions: ["motion"], enabled: true }),
      expect.objectContaining({ camera_id: "yard", active: true, state: "STREAMING", node: "n1", solutions: [] }),
    ]);

    // As curl -H 'Content-Type: application/json' -X POST sends it: a JSON content type, no body.
    const stopped = await call(gw, "POST", "/cameras/door/stop", "");
    expect(stopped.status).toBe(200);
    expect(stopped.body).toEqual({ camera_id: "door", status: "stopped", message: "camera door stopped" });
    const after = await waitFor(async () => {
      const s = await status(gw, "door");
      return s.body.active === false && s.body.state === "STOPPED" && s.body.node === null ? s : undefined;
    }, { timeoutMs: 10_000, message: "door inactive and its actor stopped" });
    expect(after.status).toBe(200);
    expect(after.body).toMatchObject({ camera_id: "door", active: false, state: "STOPPED", node: null, epoch: null, stream_info: { connected: false } });
    await waitFor(async () => (await call(gw, "GET", "/cameras")).body.cameras[0].state === "STOPPED", { message: "list shows door stopped" });
    expect((await call(gw, "GET", "/cameras")).body.cameras[0]).toMatchObject({ camera_id: "door", active: false, enabled: false, node: null });

    // Starting a stopped camera enables it again.
    const restarted = await call(gw, "POST", "/cameras/door/start", { stream_url: "rtsp://admin:s3cret@10.0.0.9:554/live?token=abc", solutions: ["motion"] });
    expect(restarted.body.message).toBe("camera door started");
    await waitFor(async () => (await status(gw, "door")).body.active === true, { timeoutMs: 10_000, message: "door active again" });
  });

  it("GET /webrtc/{id}/urls: MediaMTX HLS and RTSP URLs when configured, null otherwise, keys always there", async () => {
    const { gateway } = await cluster();
    const plain = await gateway();
    const mtx = await gateway({ MEDIAMTX_HLS: "http://mtx.example:8888/", MEDIAMTX_RTSP: "rtsp://mtx.example:8554/" });
    expect((await call(plain, "POST", "/cameras/lobby/start", { stream_url: "rtsp://10.0.0.1/lobby", solutions: [] })).status).toBe(200);

    expect((await call(plain, "GET", "/webrtc/lobby/urls")).body).toEqual({ camera_id: "lobby", webrtc: `${plain.publicUrl}/whep/lobby`, hls: null, rtsp: null });
    expect((await call(mtx, "GET", "/webrtc/lobby/urls")).body).toEqual({
      camera_id: "lobby",
      webrtc: `${mtx.publicUrl}/whep/lobby`,
      hls: "http://mtx.example:8888/camera_lobby/index.m3u8",
      rtsp: "rtsp://mtx.example:8554/camera_lobby",
    });
    expect((await call(mtx, "GET", "/webrtc/nope/urls")).status).toBe(404);
    expect((await call(mtx, "GET", "/webrtc/no.pe/urls")).status).toBe(400);
  });

  it("MEDIAMTX_HLS and MEDIAMTX_RTSP are validated at start-up", () => {
    expect(() => loadConfig({ MEDIAMTX_HLS: "mtx:8888" }, "gateway")).toThrow(ConfigError);
    expect(() => loadConfig({ MEDIAMTX_RTSP: "http://mtx:8554" }, "gateway")).toThrow(/^MEDIAMTX_RTSP must be an rtsp:\/\/ or rtsps:\/\/ URL/);
    expect(loadConfig({ MEDIAMTX_HLS: "https://mtx:8888//", MEDIAMTX_RTSP: "rtsps://mtx:8322" }, "gateway")).toMatchObject({ mediamtxHls: "https://mtx:8888", mediamtxRtsp: "rtsps://mtx:8322" });
  });

  it("GET /system/stats: each live node's cameras, capacity, draining, uptime, CPU and memory, and cluster totals", async () => {
    const { gateway, nats } = await cluster({ MAX_CAMERAS: "7" });
    const second = runCamfleet(["node"], { env: { NATS_URL: nats.url, NODE_ID: "n2", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", MAX_CAMERAS: "5" }, onCleanup: onTestFinished });
    await second.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady, 20_000);
    const gw = await gateway();
    for (const id of ["s1", "s2", "s3"]) expect((await call(gw, "POST", `/cameras/${id}/start`, { stream_url: `rtsp://10.0.0.1/${id}` })).status).toBe(200);

    const stats = await waitFor(async () => {
      const s = await call(gw, "GET", "/system/stats");
      return s.body.cluster?.nodes === 2 && s.body.cluster.cameras === 3 ? s : undefined;
    }, { timeoutMs: 15_000, message: "both nodes listed, 3 cameras running" });
    expect(stats.status).toBe(200);
    expect(stats.body.cluster).toMatchObject({ nodes: 2, cameras: 3, capacity: 12, draining: 0 });
    // A node process of Node.js has tens of MB resident; the total is the nodes' sum.
    expect(stats.body.cluster.memory_bytes).toBe(stats.body.nodes[0].memory_bytes + stats.body.nodes[1].memory_bytes);
    expect(stats.body.nodes.map((n: Json) => [n.node, n.capacity, n.draining, n.version])).toEqual([
      ["n1", 7, false, VERSION],
      ["n2", 5, false, VERSION],
    ]);
    for (const n of stats.body.nodes) {
      expect(n.uptime_s).toBeGreaterThanOrEqual(0);
      expect(n.uptime).toMatch(/^(\d+h)?(\d+m)?\d+s$/);
      expect(n.memory_bytes).toBeGreaterThan(20 * 1024 * 1024);
      expect(n.memory_bytes).toBeLessThan(2 * 1024 ** 3);
    }
    // CPU is measured between two heartbeats, so it appears from the second one on.
    await waitFor(async () => {
      const s = await call(gw, "GET", "/system/stats");
      return s.body.nodes.every((n: Json) => typeof n.cpu_percent === "number" && n.cpu_percent >= 0 && n.cpu_percent < 400);
    }, { timeoutMs: 10_000, message: "cpu_percent of both nodes" });
    expect(stats.body.gateway).toEqual({ id: expect.stringMatching(/^gw-/), url: gw.publicUrl, viewers: 0 });
  });

  it("a stop with a body it does not take (text, a JSON array, unknown fields) is 400 and the camera keeps running", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();
    expect((await call(gw, "POST", "/cameras/s9/start", { stream_url: "rtsp://10.0.0.1/s9" })).status).toBe(200);
    for (const [body, type] of [["garbage", "text/plain"], ["[1,2]", "application/json"], ['{"force":true}', "application/json"]] as const) {
      const r = await call(gw, "POST", "/cameras/s9/stop", body, { "content-type": type });
      expect(r.status, `${type} ${body}`).toBe(400);
      expect(r.body.error.code).toBe("INVALID_ARGUMENT");
    }
    expect((await call(gw, "GET", "/cameras/s9")).body.enabled).toBe(true);
    expect((await call(gw, "POST", "/cameras/s9/stop", "{}", { "content-type": "application/json" })).status).toBe(200);
  });

  it("bad input: bad ids, missing or wrong fields, bad JSON, 2 MiB bodies, unknown cameras, local sources; nothing is created", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();

    for (const [method, path] of [["POST", "/cameras/a.b/start"], ["POST", "/cameras/a.b/stop"], ["GET", "/cameras/a.b/status"], ["GET", "/cameras/%20x/status"]] as const) {
      const r = await call(gw, method, path, method === "POST" ? { stream_url: "rtsp://10.0.0.1/x" } : undefined);
      expect(r.status, `${method} ${path}`).toBe(400);
      expect(r.body.error.code).toBe("INVALID_ARGUMENT");
    }
    const idTooLong = await call(gw, "POST", `/cameras/${"x".repeat(65)}/start`, { stream_url: "rtsp://10.0.0.1/x" });
    expect(idTooLong.status).toBe(400);

    const bodies: Array<[unknown, RegExp]> = [
      [{}, /stream_url/],
      [{ solutions: ["motion"] }, /stream_url/],
      [{ stream_url: "ftp://10.0.0.1/x" }, /stream_url: must be a URL with scheme/],
      [{ stream_url: 42 }, /stream_url/],
      [{ stream_url: "rtsp://10.0.0.1/x", solutions: ["no spaces"] }, /solutions\.0/],
      [{ stream_url: "rtsp://10.0.0.1/x", solutions: "motion" }, /solutions/],
      [{ stream_url: "testsrc:?size=320x240" }, /ALLOW_LOCAL_SOURCES/],
      ["{not json", /JSON/i],
    ];
    for (const [body, message] of bodies) {
      const r = await call(gw, "POST", "/cameras/c1/start", body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error).toEqual({ code: "INVALID_ARGUMENT", message: expect.stringMatching(message) });
    }
    // An empty JSON body is no body: start still needs stream_url; the config routes keep fastify's strict parser.
    expect((await call(gw, "POST", "/cameras/c1/start", "")).body.error).toEqual({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/stream_url/) });
    expect((await call(gw, "POST", "/cameras", "")).body.error).toEqual({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/Body cannot be empty/) });
    const big = await call(gw, "POST", "/cameras/c1/start", JSON.stringify({ stream_url: "rtsp://10.0.0.1/x", pad: "x".repeat(2 * 1024 * 1024) }));
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe("PAYLOAD_TOO_LARGE");
    // Credentials in a bad request never come back.
    const leaky = await call(gw, "POST", "/cameras/c1/start", { stream_url: "gopher://admin:hunter2@10.0.0.1/x" });
    expect(leaky.status).toBe(400);
    expect(JSON.stringify(leaky.body)).not.toContain("hunter2");

    for (const [method, path] of [["POST", "/cameras/ghost/stop"], ["GET", "/cameras/ghost/status"]] as const) {
      const r = await call(gw, method, path);
      expect(r.status, `${method} ${path}`).toBe(404);
      expect(r.body.error.code).toBe("NOT_FOUND");
    }
    expect((await call(gw, "GET", "/cameras")).body).toEqual({ cameras: [], total: 0 });
    expect((await call(gw, "GET", "/")).body.cameras).toBe(0);
  });

  it("without a node: GET / still answers (0 nodes, cameras unknown), camera routes say UNAVAILABLE", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const gw = await startTestGateway({ natsUrl: nats.url, nodeId: "gw-alone", onCleanup: onTestFinished });
    const info = await call(gw, "GET", "/");
    expect(info.status).toBe(200);
    expect(info.body).toMatchObject({ nodes: 0, cameras: null });
    const list = await call(gw, "GET", "/cameras");
    expect(list.status).toBe(503);
    expect(list.body.error.code).toBe("UNAVAILABLE");
  });

  it("with CAMFLEET_API_TOKEN every new route needs the bearer token; /health stays open", async () => {
    const { gateway } = await cluster();
    const gw = await gateway({ CAMFLEET_API_TOKEN: "tok-legacy-1" });
    const routes: Array<[string, string, unknown?]> = [
      ["GET", "/"],
      ["GET", "/cameras"],
      ["POST", "/cameras/t1/start", { stream_url: "rtsp://10.0.0.1/t1" }],
      ["GET", "/cameras/t1/status"],
      ["POST", "/cameras/t1/stop"],
      ["GET", "/system/stats"],
      ["GET", "/webrtc/t1/urls"],
      ["POST", "/cameras", { id: "t2", url: "rtsp://10.0.0.1/t2" }],
      ["GET", "/cameras/t1"],
      ["PUT", "/cameras/t1", { url: "rtsp://10.0.0.1/t1" }],
      ["PATCH", "/cameras/t1", { name: "x" }],
      ["DELETE", "/cameras/t1"],
    ];
    for (const [method, path, body] of routes) {
      const denied = await call(gw, method, path, body);
      expect(denied.status, `${method} ${path} without a token`).toBe(401);
      expect(denied.body.error.code).toBe("UNAUTHENTICATED");
      expect(denied.headers.get("www-authenticate")).toBe('Bearer realm="camfleet"');
      expect((await call(gw, method, path, body, { authorization: "Bearer wrong-token!" })).status).toBe(401);
    }
    // Nothing got through: no camera exists.
    const auth = { authorization: "Bearer tok-legacy-1" };
    expect((await call(gw, "GET", "/cameras", undefined, auth)).body.total).toBe(0);
    for (const [method, path, body] of routes) {
      expect((await call(gw, method, path, body, auth)).status, `${method} ${path} with the token`).not.toBe(401);
    }
    expect((await call(gw, "GET", "/health")).status).toBe(200);
  });
});

describe("legacy routes: a real camera", () => {
  it("the status of a testsrc camera has its stream's size and rate and counts frames", async () => {
    const { gateway, nats } = await cluster({ CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true" });
    const gw = await gateway();
    const started = await call(gw, "POST", "/cameras/pattern/start", { stream_url: "testsrc:?size=320x240&rate=10", solutions: [] });
    expect(started.status).toBe(200);
    expect(started.body.stream_url).toBe("testsrc:?size=320x240&rate=10");

    const s = await waitFor(async () => {
      const r = await status(gw, "pattern");
      return r.body.stream_info?.connected === true && r.body.processing_info.frames_processed > 10 ? r : undefined;
    }, { timeoutMs: 20_000, message: "pattern streaming with frames counted" });
    expect(s.body).toMatchObject({ camera_id: "pattern", active: true, state: "STREAMING", node: "n1", stream_info: { width: 320, height: 240, connected: true } });
    expect(s.body.stream_info.fps).toBeGreaterThan(5);
    expect(s.body.stream_info.fps).toBeLessThan(15);
    expect(s.body.processing_info.avg_process_time).toMatch(/^\d+ms$/);
    // On-demand publishing and nobody watching: no WHIP session.
    expect(s.body.webrtc_info).toEqual({ session_id: null, active: false, uptime: "0s" });

    expect((await call(gw, "POST", "/cameras/pattern/stop")).status).toBe(200);
    await waitFor(async () => (await status(gw, "pattern")).body.active === false, { timeoutMs: 10_000, message: "pattern inactive" });
    // Consumers of the status stream learn it stopped: its last event is STOPPED, said once, by its owner at its epoch.
    const nc = await connectTestClient([nats.url], onTestFinished);
    const events = await waitFor(async () => {
      const all = (await readStatusEvents(nc)).filter((e) => e.camera === "pattern");
      return all.at(-1)?.state === "STOPPED" ? all : undefined;
    }, { timeoutMs: 10_000, message: "a STOPPED status event" });
    expect(events.at(-1)).toMatchObject({ state: "STOPPED", trigger: "edge", node: "n1", epoch: s.body.epoch });
    expect(events.filter((e) => e.state === "STOPPED" && e.epoch === s.body.epoch)).toHaveLength(1);
    // …and nothing said STOPPED while it started: the first event of the epoch is CONNECTING.
    expect(events.find((e) => e.epoch === s.body.epoch)?.state).toBe("CONNECTING");
  });
});

describe("legacy routes: the single worker's Python client", () => {
  it("starts a camera, reads its URLs and status, stops it, with python3-requests and a bearer token", async () => {
    const { gateway } = await cluster();
    const gw = await gateway({ CAMFLEET_API_TOKEN: "tok-py-7", MEDIAMTX_HLS: "http://mtx.example:8888" });
    await waitFor(async () => (await call(gw, "GET", "/", undefined, { authorization: "Bearer tok-py-7" })).body.nodes === 1, { message: "the node is listed" });
    const run = await promisify(execFile)("/usr/bin/python3", [CLIENT, gw.url, "front", "rtsp://op:pw9@10.0.0.7/front", "motion"], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CAMFLEET_API_TOKEN: "tok-py-7" },
      timeout: 60_000,
    }).catch((err: Error & { stdout?: string; stderr?: string }) => {
      // Which step did not answer 2xx is in the client's own lines.
      throw new Error(`${err.message}\nstdout:\n${err.stdout ?? ""}\nstderr:\n${err.stderr ?? ""}`);
    });
    const steps = Object.fromEntries(
      run.stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as Json)
        .map((s) => [s.step, s]),
    ) as Record<string, Json>;
    expect(Object.keys(steps)).toEqual(["info", "start", "urls", "status", "cameras", "stop", "stopped"]);
    expect(steps.info).toMatchObject({ status: 200, body: { name: "camfleet", nodes: 1, capabilities: { hls: true, rtsp: false } } });
    expect(steps.start).toEqual({ step: "start", status: 200, body: { camera_id: "front", status: "started", stream_url: "rtsp://***@10.0.0.7/front", message: "camera front created and started" } });
    expect(steps.urls!.body).toEqual({ camera_id: "front", webrtc: `${gw.publicUrl}/whep/front`, hls: "http://mtx.example:8888/camera_front/index.m3u8", rtsp: null });
    expect(steps.status).toMatchObject({ status: 200, body: { camera_id: "front", active: true, state: "STREAMING", stream_info: { connected: true } } });
    expect(steps.cameras!.body.cameras).toEqual([expect.objectContaining({ camera_id: "front", solutions: ["motion"] })]);
    expect(steps.stop).toEqual({ step: "stop", status: 200, body: { camera_id: "front", status: "stopped", message: "camera front stopped" } });
    expect(steps.stopped).toMatchObject({ status: 200, body: { camera_id: "front", active: false } });
    expect(run.stdout).not.toContain("pw9");
  });
});
