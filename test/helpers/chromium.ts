// Debian's Chromium driven by playwright-core, as a WebRTC peer that is not
// werift: a WHEP viewer or a WHIP publisher (fake camera, H.264) in a page.
// Flags found on Debian 12 here: loopback candidates appear once the page has media
// permission (fake device, granted without a prompt).

import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type { RegisterCleanup } from "./nats-harness.ts";

export const CHROMIUM = "/usr/bin/chromium";
export const hasChromium = existsSync(CHROMIUM);

/** Runs in the page; plain JavaScript text so no compiler helper leaks into it. */
const PAGE_SCRIPT = `
const loopbackOnly = (sdp) => sdp.split("\\r\\n").filter((l) => !l.startsWith("a=candidate:") || (l.split(" ")[2].toLowerCase() === "udp" && l.split(" ")[4] === "127.0.0.1")).join("\\r\\n");
const gathered = (pc) => pc.iceGatheringState === "complete" ? Promise.resolve() : new Promise((r) => pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") r(); }));
window.unlockLoopback = async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  stream.getTracks().forEach((t) => t.stop());
};
async function exchange(pc, url) {
  await pc.setLocalDescription();
  await gathered(pc);
  const postAt = performance.now();
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/sdp" }, body: loopbackOnly(pc.localDescription.sdp) });
  const body = await res.text();
  const answeredAt = performance.now();
  if (res.status !== 201) return { status: res.status, body, postAt, answeredAt };
  await pc.setRemoteDescription({ type: "answer", sdp: loopbackOnly(body) });
  return { status: res.status, location: res.headers.get("location"), postAt, answeredAt };
}
function showTrack(e) {
  const v = document.createElement("video");
  v.muted = true; v.autoplay = true; v.playsInline = true;
  v.srcObject = new MediaStream([e.track]);
  document.body.append(v);
  v.play().catch(() => {});
}
// Chromium as the answering side of a WHIP exchange (the test serves the HTTP part).
window.answerWhip = async (offer) => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.ontrack = showTrack;
  await pc.setRemoteDescription({ type: "offer", sdp: offer });
  await pc.setLocalDescription();
  await gathered(pc);
  return pc.localDescription.sdp;
};
window.watch = async (url) => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = showTrack;
  window.firstDecodedAt = null;
  const poll = setInterval(async () => {
    const s = await window.videoStats();
    if (s && s.framesDecoded > 0) { window.firstDecodedAt = performance.now(); clearInterval(poll); }
  }, 20);
  return exchange(pc, url);
};
window.publish = async (url) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const tr = pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
  const h264 = RTCRtpSender.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
  tr.setCodecPreferences(h264);
  return exchange(pc, url);
};
window.videoStats = async () => {
  if (!window.pc) return null;
  const stats = await window.pc.getStats();
  let out = null;
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      out = { framesDecoded: r.framesDecoded ?? 0, keyFramesDecoded: r.keyFramesDecoded ?? 0, frameWidth: r.frameWidth ?? 0, frameHeight: r.frameHeight ?? 0,
        packetsReceived: r.packetsReceived ?? 0, pliCount: r.pliCount ?? 0, firCount: r.firCount ?? 0, codec: r.codecId ? stats.get(r.codecId)?.mimeType : undefined };
    }
  });
  return out;
};
window.outboundStats = async () => {
  const stats = await window.pc.getStats();
  let out = null;
  stats.forEach((r) => { if (r.type === "outbound-rtp" && r.kind === "video") out = { framesEncoded: r.framesEncoded ?? 0, codec: r.codecId ? stats.get(r.codecId)?.mimeType : undefined }; });
  return out;
};
`;

export interface VideoStats {
  framesDecoded: number;
  keyFramesDecoded: number;
  frameWidth: number;
  frameHeight: number;
  packetsReceived: number;
  pliCount: number;
  firCount: number;
  codec?: string;
}

export interface Exchange {
  status: number;
  location?: string;
  body?: string;
  postAt: number;
  answeredAt: number;
}

export interface PeerPage {
  page: Page;
  watch(url: string): Promise<Exchange>;
  publish(url: string): Promise<Exchange>;
  /** Answers a WHIP offer in the page; returns the answer SDP (all candidates gathered). */
  answerWhip(offer: string): Promise<string>;
  stats(): Promise<VideoStats | null>;
  /** performance.now() in the page when the first frame was decoded, or null. */
  firstDecodedAt(): Promise<number | null>;
  closePeer(): Promise<void>;
}

export interface LaunchedChromium {
  context: BrowserContext;
  /** NAME=value in the environment of every Chromium process of this launch: see processesMarked(). */
  mark: string;
  /** A page on `origin` + `path` (a page that answers 2xx: it only has to make the origin's secure context). */
  newPeerPage(origin: string, path?: string): Promise<PeerPage>;
  /** Closes the browser and removes its profile; also registered as cleanup. */
  close(): Promise<void>;
}

export async function launchChromium(onCleanup: RegisterCleanup): Promise<LaunchedChromium> {
  const userDataDir = await mkdtemp(join(tmpdir(), "camfleet-chromium-"));
  // Every Chromium process inherits this, so a test can prove they are all gone.
  const mark = `CAMFLEET_CHROMIUM=${randomUUID()}`;
  let context: BrowserContext | undefined;
  const close = async () => {
    await context?.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true });
  };
  onCleanup(close);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    env: { ...process.env, CAMFLEET_CHROMIUM: mark.slice(mark.indexOf("=") + 1) },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--allow-loopback-in-peer-connection",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    ],
  });
  const ctx = context;
  return {
    context: ctx,
    mark,
    close,
    async newPeerPage(origin: string, path = "/health"): Promise<PeerPage> {
      const page = await ctx.newPage();
      // Any page of an http://127.0.0.1 origin is a secure context: getUserMedia exists there.
      await page.goto(`${origin}${path}`);
      await page.addScriptTag({ content: PAGE_SCRIPT });
      await page.evaluate(() => (globalThis as unknown as { unlockLoopback(): Promise<void> }).unlockLoopback());
      type W = {
        watch(u: string): Promise<Exchange>;
        publish(u: string): Promise<Exchange>;
        answerWhip(offer: string): Promise<string>;
        videoStats(): Promise<VideoStats | null>;
        firstDecodedAt: number | null;
        pc: { close(): void };
      };
      return {
        page,
        watch: (url) => page.evaluate((u) => (globalThis as unknown as W).watch(u), url),
        publish: (url) => page.evaluate((u) => (globalThis as unknown as W).publish(u), url),
        answerWhip: (offer) => page.evaluate((o) => (globalThis as unknown as W).answerWhip(o), offer),
        stats: () => page.evaluate(() => (globalThis as unknown as W).videoStats()),
        firstDecodedAt: () => page.evaluate(() => (globalThis as unknown as W).firstDecodedAt),
        closePeer: () => page.evaluate(() => (globalThis as unknown as W).pc.close()),
      };
    },
  };
}

/** Live processes (not zombies) whose environment carries `mark` (NAME=value). */
export async function processesMarked(mark: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state === "Z" || state === "X") continue;
      if ((await readFile(`/proc/${entry}/environ`, "utf8")).split("\0").includes(mark)) pids.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return pids;
}
