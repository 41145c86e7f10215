// The dashboard with many cameras: 50 camera tiles (BENCH_CAMERAS) in
// Debian's Chromium, about 8 of them on screen. Over BENCH_WINDOW_S (60) it
// measures the browser's CPU (every Chromium process, from /proc), its
// memory (PSS of those processes, and the page's JS heap over CDP), and
// counts WebRTC sessions three ways: RTCPeerConnections alive in the page
// (the constructor is wrapped before the page loads), the page's own
// window.camfleet.peers, and the relay's viewers (GET /webrtc/stats). Off-screen
// tiles must hold none. Baseline in the same run, same fleet, same browser: a
// bare page that plays the same number of cameras over WHEP, nothing else.
// Then the page scrolls to the end: sessions must follow the tiles in view.
//
// A real fleet: nats-server, `camfleet gateway`, `camfleet node` with camera
// actors reading one shared RTSP stream (GStreamer, 320×240 at 15 fps) and
// publishing on demand, so only watched cameras publish.

import { readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import type { Page } from "playwright-core";
import { superviseSpawn } from "../runtime/infra/child-process.ts";
import { ControlClient } from "../runtime/index.ts";
import { subjects } from "../subjects/index.ts";
import { launchChromium, processesMarked } from "../test/helpers/chromium.ts";
import { startRtspCamera } from "../test/helpers/rtsp-camera.ts";
import { waitUntil } from "./fleet-bench.ts";
import { CAMFLEET_BIN, onCleanup, runBench, startBenchNats, startGatewayProcess } from "./gateway-procs.ts";
import { CLK_TCK, cpuTicks, statFields } from "./proc-profile.ts";

const CAMERAS = Number(process.env.BENCH_CAMERAS ?? 50);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 60);
/** 1440 × 600: the grid shows 4 columns of 4:3 tiles, two rows of them on screen (8 tiles), the fleet view beside it. */
const VIEWPORT = { width: 1440, height: 600 };

/** Counts RTCPeerConnections the page made and has not closed; runs before any page script. */
const COUNT_PEERS = `
(() => {
  const Native = globalThis.RTCPeerConnection;
  if (!Native) return;
  globalThis.__livePeers = 0;
  globalThis.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); globalThis.__livePeers++; this.__open = true; }
    close() { if (this.__open) { this.__open = false; globalThis.__livePeers--; } return super.close(); }
  };
})();`;

/** The baseline: `n` cameras over WHEP in bare <video> elements, nothing else. */
const BASELINE = (ids: string[]) => `
(async () => {
  for (const id of ${JSON.stringify(ids)}) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    const v = document.createElement("video");
    v.muted = true; v.autoplay = true; v.playsInline = true; v.width = 270;
    document.body.append(v);
    pc.ontrack = (e) => { v.srcObject = new MediaStream([e.track]); v.play().catch(() => {}); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => { if (pc.iceGatheringState === "complete") r(); pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); setTimeout(r, 2000); });
    const res = await fetch("/whep/" + id, { method: "POST", headers: { "content-type": "application/sdp" }, body: pc.localDescription.sdp });
    const answer = await res.text();
    (globalThis.__log ??= []).push(id + " " + res.status);
    if (res.status !== 201) continue;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    (globalThis.__pcs ??= []).push(pc);
  }
})();`;

/**
 * Every process of the browser: those carrying the launch's mark and all their descendants (the zygote's
 * renderers and utility processes do not all keep the environment the mark is in).
 */
async function browserPids(mark: string): Promise<number[]> {
  const parent = new Map<number, number>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f !== undefined && f[0] !== "Z") parent.set(Number(entry), Number(f[1]));
  }
  const all = new Set(await processesMarked(mark));
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parent) if (!all.has(pid) && all.has(ppid)) grew = all.add(pid) !== undefined;
  }
  return [...all];
}

function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

interface Sample {
  cpuPercent: number;
  pssMiB: number;
  heapMiB: number;
  livePeers: number;
  pagePeers: number;
  relayViewers: number;
  fps: number;
}

/** Frames decoded per second by all live sessions of the page (the dashboard's or the baseline's). */
const DECODED = `(async () => {
  const pcs = globalThis.camfleet ? [...globalThis.camfleet.peers.values()] : (globalThis.__pcs ?? []);
  let n = 0;
  for (const pc of pcs) (await pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video") n += r.framesDecoded ?? 0; });
  return n;
})()`;

async function measure(page: Page, mark: string, gatewayUrl: string): Promise<Sample> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  const pids = await browserPids(mark);
  console.log(`measuring ${pids.length} Chromium processes for ${WINDOW_S} s`);
  const ticks = () => pids.reduce((s, p) => s + (cpuTicks(p) ?? 0), 0);
  const frames0 = (await page.evaluate(DECODED)) as number;
  const t0 = ticks();
  const start = performance.now();
  await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
  const seconds = (performance.now() - start) / 1000;
  const cpuPercent = ((ticks() - t0) / CLK_TCK / seconds) * 100;
  const frames1 = (await page.evaluate(DECODED)) as number;
  const { metrics } = (await cdp.send("Performance.getMetrics")) as { metrics: Array<{ name: string; value: number }> };
  const heap = metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? 0;
  const stats = (await (await fetch(`${gatewayUrl}/webrtc/stats`)).json()) as { cameras: Array<{ viewers: number }> };
  await cdp.detach();
  return {
    cpuPercent,
    pssMiB: (await browserPids(mark)).reduce((s, p) => s + pssBytes(p), 0) / 1048576,
    heapMiB: heap / 1048576,
    livePeers: (await page.evaluate("globalThis.__livePeers ?? 0")) as number,
    pagePeers: (await page.evaluate("globalThis.camfleet ? globalThis.camfleet.peers.size : (globalThis.__pcs ?? []).length")) as number,
    relayViewers: stats.cameras.reduce((s, c) => s + c.viewers, 0),
    fps: (frames1 - frames0) / seconds,
  };
}

/** Tiles whose box intersects the viewport, by camera id. */
function tilesInView(page: Page): Promise<string[]> {
  return page.evaluate(`[...document.querySelectorAll(".tile")].filter((t) => { const r = t.getBoundingClientRect(); return r.bottom > 1 && r.top < innerHeight - 1 && r.right > 1 && r.left < innerWidth - 1; }).map((t) => t.dataset.camera)`) as Promise<string[]>;
}

async function main(): Promise<void> {
  const { nats, nc } = await startBenchNats("bench-dash");
  const rtsp = await startRtspCamera({ onCleanup, shared: true, mounts: [{ path: "/cam", width: 320, height: 240, fps: 15 }] });
  const { url } = await startGatewayProcess(nats.url);
  const node = superviseSpawn(CAMFLEET_BIN, ["node"], {
    env: { ...process.env, LOG_LEVEL: "warn", NATS_URL: nats.url, NODE_ID: "bench-dash-node", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", MAX_CAMERAS: String(CAMERAS + 10), WHIP_URL: `${url}/whip`, WEBRTC_LOOPBACK_ONLY: "true", ON_DEMAND_LINGER_MS: "2000" },
  });
  onCleanup(() => node.terminate(10_000));
  await waitUntil(async () => {
    if (node.hasExited()) throw new Error(`node exited: ${node.stderrTail()}`);
    return (await nc.request(subjects.ctl.nodesList, "{}", { timeout: 2000 }).catch(() => undefined))?.string().includes("bench-dash-node") ?? false;
  }, 30_000, "node ready", 100);
  const client = new ControlClient(nc);
  const ids = Array.from({ length: CAMERAS }, (_, i) => `cam${String(i).padStart(2, "0")}`);
  for (const id of ids) await client.putCamera({ id, url: rtsp.url("/cam"), publish: "on-demand" });
  await waitUntil(async () => (await client.listAllCameras()).filter((c) => c.state === "STREAMING").length === CAMERAS, 120_000, `${CAMERAS} cameras STREAMING`, 500);
  console.log(`${CAMERAS} cameras STREAMING on one node; measuring ${WINDOW_S} s per case`);

  const browser = await launchChromium(onCleanup);
  const page = await browser.context.newPage();
  await page.setViewportSize(VIEWPORT);
  await page.addInitScript(COUNT_PEERS);
  page.on("console", (m) => m.type() === "warning" && console.log(`page ${m.type()}: ${m.text()}`));
  page.on("response", (r) => r.status() >= 400 && console.log(`page: ${r.status()} ${r.request().method()} ${r.url()}`));
  if (process.env.BENCH_DEBUG === "1") setInterval(() => void page.evaluate("JSON.stringify({ peers: [...(globalThis.camfleet?.peers.keys() ?? [])], states: [...document.querySelectorAll('.tile')].map((t) => t.dataset.state[0]).join('') })").then((x) => console.log(x), () => undefined), 2000).unref();
  // Loopback ICE candidates need media permission (test/helpers/chromium.ts).
  await page.goto(`${url}/health`);
  await page.evaluate("navigator.mediaDevices.getUserMedia({ video: true }).then((s) => s.getTracks().forEach((t) => t.stop()))");

  await page.goto(`${url}/`);
  await page.locator(".tile").nth(CAMERAS - 1).waitFor({ timeout: 30_000 });
  // Tiles take their stream's shape once its size is known, which moves the rows: wait until sessions and tiles in view agree twice in a row.
  let inView: string[] = [];
  let agreed = 0;
  await waitUntil(
    async () => {
      inView = await tilesInView(page);
      const live = (await page.evaluate("[...globalThis.camfleet.peers.keys()]")) as string[];
      agreed = live.length === inView.length && inView.every((id) => live.includes(id)) ? agreed + 1 : 0;
      return agreed >= 3;
    },
    60_000,
    "a session per tile in view, steady",
    1000,
  );
  const dash = await measure(page, browser.mark, url);
  const inViewAfter = await tilesInView(page);

  // Scrolled to the end: the first tiles' sessions close, the last ones' open.
  await page.evaluate("window.scrollTo(0, document.body.scrollHeight)");
  const endView = await tilesInView(page);
  const followed = await waitUntil(
    async () => {
      const live = (await page.evaluate("[...globalThis.camfleet.peers.keys()]")) as string[];
      return live.length === endView.length && endView.every((id) => live.includes(id));
    },
    30_000,
    "sessions follow the scroll",
    100,
  ).then(
    (ms) => `yes, in ${(ms / 1000).toFixed(1)} s`,
    () => "NO",
  );

  // Baseline: the same number of cameras in a bare page, after the dashboard's sessions are gone.
  await page.goto(`${url}/health`);
  await waitUntil(async () => ((await (await fetch(`${url}/webrtc/stats`)).json()) as { cameras: Array<{ viewers: number }> }).cameras.every((c) => c.viewers === 0), 20_000, "dashboard's viewers gone", 200);
  await page.evaluate(BASELINE(inView));
  await waitUntil(async () => ((await page.evaluate(DECODED)) as number) > 0, 30_000, "baseline plays", 200).catch(async (err: unknown) => {
    console.error("baseline:", await page.evaluate("JSON.stringify({ log: globalThis.__log, states: (globalThis.__pcs ?? []).map((p) => p.connectionState) })"));
    throw err;
  });
  const base = await measure(page, browser.mark, url);

  const row = (name: string, s: Sample) =>
    `| ${name} | ${s.cpuPercent.toFixed(1)} | ${s.pssMiB.toFixed(0)} | ${s.heapMiB.toFixed(1)} | ${s.livePeers} | ${s.pagePeers} | ${s.relayViewers} | ${s.fps.toFixed(0)} |`;
  console.log("");
  console.log(`| page (${WINDOW_S} s window) | Chromium CPU % of a core | Chromium PSS MiB | JS heap MiB | RTCPeerConnections open | page's sessions | relay viewers | frames decoded/s |`);
  console.log("|---|---|---|---|---|---|---|---|");
  console.log(row(`baseline: ${inView.length} bare WHEP videos`, base));
  console.log(row(`dashboard: ${CAMERAS} tiles, ${inView.length} on screen`, dash));
  console.log("");
  const offScreenHeld = dash.livePeers - inViewAfter.length;
  console.log(`tiles on screen: ${inView.length} (${inView[0]}…${inView[inView.length - 1]}); off-screen tiles holding a WebRTC session: ${offScreenHeld} (target 0) ${offScreenHeld === 0 && dash.relayViewers === inView.length ? "PASS" : "FAIL"}`);
  console.log(`after scrolling to the end (${endView.length} tiles in view), sessions followed: ${followed}`);
  console.log(`dashboard over baseline: CPU ${(dash.cpuPercent - base.cpuPercent).toFixed(1)} points, PSS ${(dash.pssMiB - base.pssMiB).toFixed(0)} MiB`);
}

await runBench(main);
