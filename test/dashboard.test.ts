// The dashboard (gateway/ui/) in Debian's Chromium against a real fleet:
// `camfleet up` (embedded NATS, node up1, the reference detector, the gateway)
// with an API token, a second `camfleet node` (n2) on up's NATS, and two RTSP
// cameras from GStreamer. One browser and one fleet for the whole file; the
// scenarios run in order and build on each other. Screenshots of each state
// go to test-artifacts/dashboard/ for a reviewer.

import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { hasChromium, launchChromium, type LaunchedChromium } from "./helpers/chromium.ts";
import { callJson } from "./helpers/http.ts";
import { reservePort } from "./helpers/ports.ts";
import { startRtspCamera, type RtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

const ARTIFACTS = fileURLToPath(new URL("../test-artifacts/dashboard/", import.meta.url));
const TOKEN = "dash-tok-7741";
const AI = { enabled: true, max_fps: 4 };

const cleanups: Array<() => Promise<void>> = [];
const onCleanup = (fn: () => Promise<void>) => void cleanups.push(fn);
afterAll(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
});

let url: string;
let client: ControlClient;
let nc: NatsConnection;
let front: RtspCamera; // "door" (moving ball) and "porch" (added through the form)
let back: RtspCamera; // "yard": the camera that is killed
let up: CamfleetProcess;
let browser: LaunchedChromium;
let page: Page;

/** framesDecoded of the camera's live WHEP session in the page (window.camfleet.peers), or -1 without one. */
async function framesDecoded(camera: string): Promise<number> {
  return page.evaluate(async (id) => {
    type Stats = { forEach(fn: (r: { type: string; kind?: string; framesDecoded?: number }) => void): void };
    const pc = (globalThis as unknown as { camfleet: { peers: Map<string, { getStats(): Promise<Stats> }> } }).camfleet.peers.get(id);
    if (pc === undefined) return -1;
    let n = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") n = r.framesDecoded ?? 0;
    });
    return n;
  }, camera);
}

/** Waits until the camera's tile decodes video and keeps decoding (the count grows). */
async function expectPlaying(camera: string, timeoutMs = 30_000): Promise<void> {
  const first = await waitFor(async () => {
    const n = await framesDecoded(camera);
    return n > 0 ? n : undefined;
  }, { timeoutMs, intervalMs: 200, message: `${camera}'s tile decodes video` });
  await waitFor(async () => (await framesDecoded(camera)) > first + 10, { timeoutMs: 10_000, intervalMs: 200, message: `${camera}'s framesDecoded grows` });
}

const tile = (camera: string) => page.locator(`.tile[data-camera="${camera}"]`);
const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
const ownerOf = async (camera: string) => (await client.cameraStatus(camera).catch(() => undefined))?.node;

describe.skipIf(!hasChromium)("the dashboard in Chromium against camfleet up and a second node", () => {
  beforeAll(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    const dataDir = await mkdtemp(join(tmpdir(), "camfleet-dash-"));
    onCleanup(() => rm(dataDir, { recursive: true, force: true }));
    front = await startRtspCamera({ onCleanup, mounts: [{ path: "/door", width: 640, height: 360, fps: 15 }, { path: "/porch", width: 320, height: 240, fps: 15, pattern: "smpte" }] });
    back = await startRtspCamera({ onCleanup, mounts: [{ path: "/yard", width: 480, height: 270, fps: 15, pattern: "smpte" }] });
    const natsPort = await reservePort();
    const detector = `127.0.0.1:${await reservePort()}`;
    up = runCamfleet(["up"], {
      env: {
        NODE_ID: "up1",
        HTTP_PORT: "0",
        CAMFLEET_NATS_PORT: String(natsPort),
        DETECTOR_LISTEN: detector,
        CAMFLEET_DATA_DIR: dataDir,
        CAMFLEET_ACTOR_KIND: "camera",
        CAMFLEET_API_TOKEN: TOKEN,
        WEBRTC_LOOPBACK_ONLY: "true",
        ON_DEMAND_LINGER_MS: "2000",
      },
      onCleanup,
    });
    url = (await up.waitForLog((l) => l.msg === LOG_MESSAGES.gatewayReady, 30_000)).url as string;
    await up.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    const n2 = runCamfleet(["node"], {
      env: {
        NODE_ID: "n2",
        HTTP_PORT: "0",
        NATS_URL: `nats://127.0.0.1:${natsPort}`,
        CAMFLEET_ACTOR_KIND: "camera",
        CAMFLEET_API_TOKEN: TOKEN,
        WHIP_URL: `${url}/whip`,
        AI_ENDPOINT: detector,
        WEBRTC_LOOPBACK_ONLY: "true",
        ON_DEMAND_LINGER_MS: "2000",
      },
      onCleanup,
    });
    await n2.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady, 20_000);
    nc = await connect({ servers: `nats://127.0.0.1:${natsPort}` });
    onCleanup(() => nc.close());
    client = new ControlClient(nc);
    await waitFor(async () => (await client.listNodes()).nodes.length === 2, { timeoutMs: 10_000, message: "both nodes live" });
    await client.putCamera({ id: "door", url: front.url("/door"), solutions: ["motion"], ai: AI });
    await client.putCamera({ id: "yard", url: back.url("/yard") });

    browser = await launchChromium(onCleanup);
    page = await browser.context.newPage();
    page.on("pageerror", (err) => console.error("page error:", err));
    // Chromium offers 127.0.0.1 candidates only to a page with media permission (test/helpers/chromium.ts): granted once for the origin.
    await page.goto(`${url}/health`);
    await page.evaluate(async () => {
      type Media = { mediaDevices: { getUserMedia(c: object): Promise<{ getTracks(): Array<{ stop(): void }> }> } };
      for (const t of (await (globalThis as unknown as { navigator: Media }).navigator.mediaDevices.getUserMedia({ video: true })).getTracks()) t.stop();
    });
  }, 90_000);

  it("serves the page to a browser at / and /ui/ without the token, the JSON to API clients, and its modules from the gateway", async () => {
    const html = await fetch(`${url}/`, { headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" } });
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toMatch(/^text\/html/);
    expect(html.headers.get("vary")).toMatch(/accept/i);
    expect(await html.text()).toContain("/ui/app.js");
    expect((await fetch(`${url}/ui/`)).status).toBe(200);
    const mod = await fetch(`${url}/ui/vendor/preact.mjs`);
    expect(mod.status).toBe(200);
    expect(mod.headers.get("content-type")).toMatch(/javascript/);
    expect((await callJson({ url }, "GET", "/ui/vendor/package.json")).status).toBe(404);
    // API clients: the capabilities JSON as before, and still behind the token.
    expect((await callJson({ url }, "GET", "/")).status).toBe(401);
    const info = await callJson({ url }, "GET", "/", undefined, { authorization: `Bearer ${TOKEN}` });
    expect(info.status).toBe(200);
    expect(info.body).toMatchObject({ name: "camfleet" });
    // Data routes stay closed: the page holds nothing itself.
    expect((await callJson({ url }, "GET", "/cameras/door/status/history")).status).toBe(401);
    const bad = await callJson({ url }, "GET", "/cameras/door/status/history?limit=0", undefined, { authorization: `Bearer ${TOKEN}` });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("INVALID_ARGUMENT");
  });

  it("asks for the token once, then both tiles play with STREAMING badges of the right size and a detection box over the moving camera", async () => {
    await page.goto(`${url}/`);
    await page.locator("#token").fill("wrong");
    await page.keyboard.press("Enter");
    await page.getByText("The token given was refused").waitFor({ timeout: 10_000 });
    await page.locator("#token").fill(TOKEN);
    await page.keyboard.press("Enter");
    await tile("door").waitFor({ timeout: 15_000 });
    await expectPlaying("door");
    await expectPlaying("yard");
    await waitFor(async () => (await tile("door").locator(".state").textContent()) === "STREAMING" && (await tile("door").locator(".size").textContent()) === "640×360", { timeoutMs: 15_000, message: "door's badge: STREAMING 640×360" });
    expect(await tile("yard").locator(".size").textContent()).toBe("480×270");
    await tile("door").locator(".box").first().waitFor({ timeout: 20_000 });
    const label = await tile("door").locator(".box span").first().textContent();
    expect(label).toMatch(/^motion \d+%$/);
    await shot("1-grid-streaming-detection");
    // The detail's timeline: door's state changes, the periodic repeats left out.
    const hist = await callJson({ url }, "GET", "/cameras/door/status/history?since=10m", undefined, { authorization: `Bearer ${TOKEN}` });
    expect(hist.status).toBe(200);
    expect(hist.body.events.length).toBeGreaterThan(0);
    expect(hist.body.events.every((e: { trigger: string; camera: string }) => e.trigger === "edge" && e.camera === "door")).toBe(true);
    expect(hist.body.events.map((e: { state: string }) => e.state)).toContain("STREAMING");
    expect((await callJson({ url }, "GET", "/cameras/door/status/history?since=soon", undefined, { authorization: `Bearer ${TOKEN}` })).status).toBe(400);
    // Asked once: a reload keeps the token (sessionStorage) and shows no prompt.
    await page.reload();
    await tile("door").waitFor({ timeout: 10_000 });
    expect(await page.locator("#token").count()).toBe(0);
  }, 90_000);

  it("adds a camera through the form (a bad field is shown at the field, nothing created), which plays; stopping it shows STOPPED", async () => {
    // By keyboard: the button takes the focus and Enter opens the dialog.
    await page.getByRole("button", { name: "Add camera" }).focus();
    await page.keyboard.press("Enter");
    const form = page.locator("dialog[open]");
    await form.getByLabel("Id").fill("porch");
    await form.getByLabel("Stream URL").fill(front.url("/porch"));
    await form.getByLabel("AI rate (frames/s)").fill("500");
    await form.getByRole("button", { name: "Add camera" }).click();
    await form.locator(".field.invalid #f-ai_fps").waitFor({ timeout: 5000 });
    expect(await form.locator("#e-ai_fps").textContent()).toBeTruthy();
    expect((await callJson({ url }, "GET", "/cameras/porch", undefined, { authorization: `Bearer ${TOKEN}` })).status).toBe(404);
    await shot("2-form-field-error");
    await form.getByLabel("AI rate (frames/s)").fill("");
    await form.getByRole("button", { name: "Add camera" }).click();
    await page.locator("dialog[open]").waitFor({ state: "detached", timeout: 5000 });
    await tile("porch").waitFor({ timeout: 10_000 });
    await expectPlaying("porch");
    await shot("3-third-camera-playing");

    await tile("porch").locator("a.title").click();
    await page.getByRole("button", { name: "Stop" }).click();
    await waitFor(async () => (await tile("porch").locator(".state").textContent()) === "STOPPED", { timeoutMs: 15_000, message: "porch's badge reads STOPPED" });
    expect((await client.getCamera("porch")).camera.enabled).toBe(false);
    expect(await framesDecoded("porch")).toBe(-1);
    await page.locator(".timeline .seg").first().waitFor({ timeout: 5000 });
    await shot("4-detail-stopped");
    await page.keyboard.press("Escape");
    await tile("door").waitFor({ timeout: 5000 });
  }, 90_000);

  it("shows ERROR with the code and a live countdown when a camera dies, and plays it again when it returns", async () => {
    await back.kill();
    await waitFor(async () => (await tile("yard").getAttribute("data-state")) === "ERROR" && (await tile("yard").locator(".countdown").count()) > 0, { timeoutMs: 30_000, intervalMs: 200, message: "yard's tile shows ERROR with a countdown" });
    expect(await tile("yard").locator(".error .code").textContent()).toMatch(/^[A-Z_]+$/);
    expect(await tile("yard").locator(".countdown").textContent()).toMatch(/^retrying in \d+ s$/);
    expect(await framesDecoded("yard")).toBe(-1);
    await shot("5-error-countdown");
    await back.restart();
    await waitFor(async () => (await tile("yard").getAttribute("data-state")) === "STREAMING", { timeoutMs: 45_000, intervalMs: 200, message: "yard streams again" });
    await expectPlaying("yard");
  }, 90_000);

  it("shows both nodes; draining the node that runs door from the page moves door to the other, where it plays", async () => {
    await page.locator('.node-card[data-node="up1"]').waitFor({ timeout: 5000 });
    await page.locator('.node-card[data-node="n2"]').waitFor({ timeout: 5000 });
    const from = await ownerOf("door");
    expect(from === "up1" || from === "n2").toBe(true);
    const to = from === "up1" ? "n2" : "up1";
    await page.locator(`.node-card[data-node="${from}"] li[data-camera="door"]`).waitFor({ timeout: 10_000 });
    await page.getByRole("button", { name: `drain node ${from}` }).click();
    await page.getByRole("button", { name: `Drain ${from}` }).click();
    await page.locator(`.node-card[data-node="${to}"] li[data-camera="door"]`).waitFor({ timeout: 20_000 });
    await page.locator(`.node-card[data-node="${from}"] .flag`).waitFor({ timeout: 10_000 });
    expect(await ownerOf("door")).toBe(to);
    await shot("6-drained");
    // A narrow window: one column, the fleet view under the grid.
    await page.setViewportSize({ width: 420, height: 900 });
    await shot("7-narrow-window");
    await page.setViewportSize({ width: 1280, height: 720 });
    await expectPlaying("door");
    // Nothing else is on the drained node.
    await waitFor(async () => (await page.locator(`.node-card[data-node="${from}"] li`).count()) === 0, { timeoutMs: 15_000, message: `no camera left on ${from}` });
  }, 90_000);
});
