// Snapshots end to end: a real RTSP camera (GStreamer), a real `camfleet node`
// running camera actors (FFmpeg), real NATS, the real gateway in this process.
// The JPEGs are decoded (jpeg-js) and judged by their size and pixels; the
// sharing of one feed loop by many clients is judged from the node's own
// count of snapshot requests.

import { readdirSync, readFileSync } from "node:fs";
import { connect } from "@nats-io/transport-node";
import jpeg from "jpeg-js";
import { describe, expect, it, onTestFinished } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { CamfleetError, subjects } from "../subjects/index.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { callJson } from "./helpers/http.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

/** pids of snapshot decoders (FFmpeg reading H.264 from its stdin) that are children of `parent`. */
function snapshotDecoders(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, "utf8").split(") ")[1]!.split(" ")[1]);
      if (ppid === parent && cmd[0]?.endsWith("ffmpeg") && cmd.includes("pipe:0")) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** A series' value in Prometheus text, 0 when absent; a bare name matches it whatever its labels. */
function metricValue(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `) || (!series.includes("{") && new RegExp(`^${series}\\{[^}]*\\} `).test(l)));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
}

interface FeedReader {
  parts: Buffer[];
  contentType: string;
  close(): void;
}

/** Reads a multipart/x-mixed-replace feed, collecting each part's body (by its Content-Length). */
async function readFeed(url: string): Promise<FeedReader> {
  const abort = new AbortController();
  const res = await fetch(url, { signal: abort.signal });
  if (res.status !== 200) throw new Error(`feed answered ${res.status}: ${await res.text()}`);
  const boundary = /boundary=([^;]+)/.exec(res.headers.get("content-type") ?? "")?.[1];
  if (boundary === undefined) throw new Error(`no boundary in ${res.headers.get("content-type")}`);
  const reader: FeedReader = { parts: [], contentType: res.headers.get("content-type") ?? "", close: () => abort.abort() };
  let buf = Buffer.alloc(0);
  void (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          const headEnd = buf.indexOf("\r\n\r\n");
          if (headEnd < 0) break;
          const head = buf.subarray(0, headEnd).toString("latin1");
          if (!head.startsWith(`--${boundary}\r\n`)) throw new Error(`part does not start with the boundary: ${JSON.stringify(head.slice(0, 60))}`);
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
          if (buf.length < headEnd + 4 + length + 2) break;
          reader.parts.push(buf.subarray(headEnd + 4, headEnd + 4 + length));
          buf = buf.subarray(headEnd + 4 + length + 2);
        }
      }
    } catch {
      // aborted by close()
    }
  })();
  return reader;
}

describe("camera snapshots", () => {
  it("snapshot.jpg is the camera's latest frame at its size or ?width=, the MJPEG feed is one loop for all its clients, and errors are 400/404/503", { timeout: 120_000 }, async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/door", width: 640, height: 360, fps: 15 }] });
    const node = await startFleetNode({ id: "snap-node", natsUrls: [nats.url], env: { CAMFLEET_ACTOR_KIND: "camera" }, onCleanup: onTestFinished });
    const ops = String((await node.proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps)).url);
    const gw = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    const requests = async (outcome = "ok") => metricValue(await (await fetch(`${ops}/metrics`)).text(), `camfleet_snapshot_requests_total{outcome="${outcome}",node="snap-node"}`);
    const gatewayMetric = async (name: string) => metricValue(await (await fetch(`${gw.url}/metrics`)).text(), name);

    await client.putCamera({ id: "door", url: cam.url("/door"), publish: "off" });
    await client.putCamera({ id: "parked", url: cam.url("/door"), publish: "off", enabled: false });
    await waitFor(async () => (await client.cameraStatus("door").catch(() => undefined))?.state === "STREAMING", { timeoutMs: 30_000, message: "door STREAMING" });

    // The first key frame may still be on its way when STREAMING begins: wait for the first picture.
    const full = await waitFor(async () => {
      const res = await fetch(`${gw.url}/cameras/door/snapshot.jpg`);
      if (res.status !== 200) throw new Error(`${res.status} ${await res.text()}`);
      return res;
    }, { timeoutMs: 15_000, intervalMs: 200, message: "a first snapshot of door" });
    expect(full.headers.get("content-type")).toBe("image/jpeg");
    expect(full.headers.get("cache-control")).toBe("no-store");
    const picture = jpeg.decode(Buffer.from(await full.arrayBuffer()), { useTArray: true });
    expect([picture.width, picture.height]).toEqual([640, 360]);
    // The ball pattern is a bright ball on black: a real decoded frame has both.
    let bright = 0;
    for (let i = 0; i < picture.data.length; i += 4) if (picture.data[i]! > 200) bright++;
    expect(bright).toBeGreaterThan(10);
    expect(bright).toBeLessThan(picture.width * picture.height * 0.5);

    const small = await fetch(`${gw.url}/cameras/door/snapshot.jpg?width=160`);
    expect(small.status).toBe(200);
    const thumb = jpeg.decode(Buffer.from(await small.arrayBuffer()));
    expect([thumb.width, thumb.height]).toEqual([160, 90]);
    // Never upscaled: a width above the source's gives the source's.
    const wide = jpeg.decode(Buffer.from(await (await fetch(`${gw.url}/cameras/door/snapshot.jpg?width=1920`)).arrayBuffer()));
    expect([wide.width, wide.height]).toEqual([640, 360]);

    // With CAMFLEET_API_TOKEN: the header, or ?token= for an <img src>.
    const secured = await startTestGateway({ natsUrl: nats.url, env: { CAMFLEET_API_TOKEN: "pic-token" }, onCleanup: onTestFinished });
    expect((await callJson(secured, "GET", "/cameras/door/snapshot.jpg")).status).toBe(401);
    expect((await callJson(secured, "GET", "/cameras/door/snapshot.jpg?token=wrong")).status).toBe(401);
    expect((await fetch(`${secured.url}/cameras/door/snapshot.jpg`, { headers: { authorization: "Bearer pic-token" } })).status).toBe(200);
    expect((await fetch(`${secured.url}/cameras/door/snapshot.jpg?token=pic-token&width=64`)).status).toBe(200);

    // Concurrent requests for one width share one decode.
    const decodesBefore = metricValue(await (await fetch(`${ops}/metrics`)).text(), `camfleet_snapshot_decodes_total{node="snap-node"}`);
    const burst = await Promise.all(Array.from({ length: 6 }, () => client.cameraSnapshot("door", 320)));
    for (const j of burst) expect(jpeg.decode(j).width).toBe(320);
    const decodes = metricValue(await (await fetch(`${ops}/metrics`)).text(), `camfleet_snapshot_decodes_total{node="snap-node"}`) - decodesBefore;
    expect(decodes).toBeGreaterThanOrEqual(1);
    expect(decodes).toBeLessThan(6);

    // Bad input: 400 with the field named; nothing reaches the node.
    const okBefore = await requests();
    for (const q of ["width=8", "width=5000", "width=abc", "width=1.5", "size=10"]) {
      const r = await callJson(gw, "GET", `/cameras/door/snapshot.jpg?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code).toBe("INVALID_ARGUMENT");
    }
    expect((await callJson(gw, "GET", "/cameras/door/stream/feed?fps=50")).status).toBe(400);
    expect((await callJson(gw, "GET", "/cameras/bad.id/snapshot.jpg")).status).toBe(400);
    await expect(client.cameraSnapshot("door", 3)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    // The node's own check, for a client that skips the ControlClient's.
    const raw = await nc.request(subjects.ctl.cameraSnapshot("door"), JSON.stringify({ width: 99999 }));
    expect(raw.json()).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
    expect(await requests()).toBe(okBefore);

    // Unknown camera: 404; known but not running: 503; both in the error shape.
    const unknown = await callJson(gw, "GET", "/cameras/nosuch/snapshot.jpg");
    expect(unknown).toMatchObject({ status: 404, body: { error: { code: "NOT_FOUND" } } });
    expect((await callJson(gw, "GET", "/cameras/nosuch/stream/feed")).status).toBe(404);
    const parked = await callJson(gw, "GET", "/cameras/parked/snapshot.jpg");
    expect(parked).toMatchObject({ status: 503, body: { error: { code: "UNAVAILABLE", message: expect.stringMatching(/not running/) } } });

    // The feed: two clients at 2 frames/s, one loop at the node.
    const feedUrl = `${gw.url}/cameras/door/stream/feed?fps=2`;
    const before = await requests();
    const started = performance.now();
    const a = await readFeed(feedUrl);
    const b = await readFeed(feedUrl);
    onTestFinished(() => {
      a.close();
      b.close();
    });
    expect(a.contentType).toMatch(/^multipart\/x-mixed-replace; boundary=/);
    await waitFor(() => a.parts.length >= 5 && b.parts.length >= 5, { timeoutMs: 15_000, message: "5 feed parts at each client" });
    const elapsedS = (performance.now() - started) / 1000;
    const asked = (await requests()) - before;
    expect(await gatewayMetric(`camfleet_feed_loops`)).toBe(1);
    expect(await gatewayMetric(`camfleet_feed_clients`)).toBe(2);
    // One loop at 2/s makes ~2 per second; a loop per client would make twice that.
    expect(asked).toBeLessThanOrEqual(Math.ceil(elapsedS * 2) + 2);
    for (const feed of [a, b]) {
      const frames = feed.parts.map((p) => jpeg.decode(p));
      expect(frames.every((f) => f.width === 640 && f.height === 360)).toBe(true);
      expect(new Set(feed.parts.map((p) => p.toString("base64"))).size).toBeGreaterThanOrEqual(2);
    }
    const widthFeed = await readFeed(`${gw.url}/cameras/door/stream/feed?width=160`);
    await waitFor(() => widthFeed.parts.length >= 1, { message: "a part of the 160-wide feed" });
    expect(jpeg.decode(widthFeed.parts[0]!).width).toBe(160);
    expect(await gatewayMetric(`camfleet_feed_loops`)).toBe(2);

    // Clients leave: the loops end, and the node is asked nothing more.
    a.close();
    b.close();
    widthFeed.close();
    await waitFor(async () => (await gatewayMetric(`camfleet_feed_loops`)) === 0 && (await gatewayMetric(`camfleet_feed_clients`)) === 0, { message: "feed loops gone" });
    const afterLeave = await requests();
    // A snapshot of its own proves the node still counts: the only new request is this one.
    await client.cameraSnapshot("door");
    expect(await requests()).toBe(afterLeave + 1);

    // Stopped: 503 once its node let it go; a feed client that stays keeps its connection (the camera may come
    // back), while a new one gets the 503 rather than a stale frame; no decoder is left behind.
    const stays = await readFeed(feedUrl);
    onTestFinished(() => stays.close());
    await waitFor(() => stays.parts.length >= 1, { message: "the staying client's first part" });
    expect((await callJson(gw, "POST", "/cameras/door/stop")).status).toBe(200);
    const stopped = await waitFor(async () => {
      const r = await callJson(gw, "GET", "/cameras/door/snapshot.jpg").catch(() => undefined);
      return r?.status === 503 ? r : undefined;
    }, { timeoutMs: 10_000, message: "503 for the stopped door" });
    expect(stopped.body.error.code).toBe("UNAVAILABLE");
    // Until the loop's next request fails, a newcomer may still get the last frame (a 200 stream): retry then.
    const lateFeed = await waitFor(async () => {
      const abort = new AbortController();
      const res = await fetch(`${gw.url}/cameras/door/stream/feed?fps=2`, { signal: abort.signal });
      if (res.status === 200) return void abort.abort();
      return { status: res.status, body: (await res.json()) as { error: { code: string } } };
    }, { timeoutMs: 5_000, message: "503 for a new feed client of the stopped door" });
    expect(lateFeed).toMatchObject({ status: 503, body: { error: { code: "UNAVAILABLE" } } });
    expect(await gatewayMetric("camfleet_feed_clients")).toBe(1);
    stays.close();
    await waitFor(async () => (await gatewayMetric("camfleet_feed_loops")) === 0, { message: "the last loop gone" });
    await expect(client.cameraSnapshot("door")).rejects.toBeInstanceOf(CamfleetError);
    await waitFor(() => snapshotDecoders(node.pid).length === 0, { timeoutMs: 5_000, message: "no snapshot ffmpeg left" });
  });

  it("a camera that is not streaming yet answers UNAVAILABLE, and a kind without pictures UNSUPPORTED_MEDIA", { timeout: 60_000 }, async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/door" }] });
    await startFleetNode({ id: "cam-node", natsUrls: [nats.url], env: { CAMFLEET_ACTOR_KIND: "camera" }, onCleanup: onTestFinished });
    const gw = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    // A mount the server does not have: the camera runs but never streams.
    await client.putCamera({ id: "dark", url: cam.url("/door").replace("/door", "/missing"), publish: "off" });
    await waitFor(async () => (await client.cameraStatus("dark").catch(() => undefined)) !== undefined, { message: "dark runs" });
    const dark = await callJson(gw, "GET", "/cameras/dark/snapshot.jpg");
    expect(dark).toMatchObject({ status: 503, body: { error: { code: "UNAVAILABLE", message: expect.stringMatching(/no picture yet/) } } });

    const simNats = await startNats({ onCleanup: onTestFinished });
    await startFleetNode({ id: "sim-node", natsUrls: [simNats.url], onCleanup: onTestFinished });
    const simGw = await startTestGateway({ natsUrl: simNats.url, onCleanup: onTestFinished });
    const simNc = await connect({ servers: simNats.url });
    onTestFinished(() => simNc.close());
    const sims = new ControlClient(simNc);
    await sims.putCamera({ id: "sim1", url: "rtsp://10.0.0.1/sim1" });
    await waitFor(async () => (await sims.cameraStatus("sim1").catch(() => undefined))?.state === "STREAMING", { message: "sim1 STREAMING" });
    const sim = await callJson(simGw, "GET", "/cameras/sim1/snapshot.jpg");
    expect(sim).toMatchObject({ status: 406, body: { error: { code: "UNSUPPORTED_MEDIA", message: expect.stringMatching(/no pictures/) } } });
  });
});
