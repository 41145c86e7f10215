// The relay with Chromium (Debian's, through playwright-core) on either side:
// watching an on-demand camera fed by a real RTSP server through a real node
// process, and publishing its fake camera over WHIP to a second page.

import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import type { Gateway } from "../gateway/index.ts";
import { ControlClient, ensureJetStream, LOG_MESSAGES } from "../runtime/index.ts";
import { BUCKETS, CameraSpecSchema, kvKeys, subjects, type CameraStatus } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { hasChromium, launchChromium } from "./helpers/chromium.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

const gatewayOn = (natsUrl: string): Promise<Gateway> => startTestGateway({ natsUrl, nodeId: "gw-1", onCleanup: onTestFinished });

describe.skipIf(!hasChromium)("relay with Chromium", () => {
  it("Chromium watches an on-demand RTSP camera through a real node: publishing starts with the viewer and stops after the linger time", async ({ annotate }) => {
    const LINGER_MS = 3_000;
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/door", width: 640, height: 360, fps: 15 }] });
    const nats = await startNats({ onCleanup: onTestFinished });
    const gw = await gatewayOn(nats.url);
    const node = runCamfleet(["node"], {
      env: {
        NATS_URL: nats.url,
        NODE_ID: "cam-node",
        HTTP_PORT: "0",
        CAMFLEET_ACTOR_KIND: "camera",
        WHIP_URL: `${gw.url}/whip/{camera}`,
        ON_DEMAND_LINGER_MS: String(LINGER_MS),
      },
      onCleanup: onTestFinished,
    });
    await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    const status = () => client.cameraStatus("door").catch(() => undefined);
    const waitStatus = (pred: (s: CameraStatus) => boolean, message: string, timeoutMs = 20_000) =>
      waitFor(async () => {
        const s = await status();
        return s !== undefined && pred(s) ? s : undefined;
      }, { timeoutMs, intervalMs: 50, message });

    await client.putCamera({ id: "door", url: cam.url("/door"), publish: "on-demand" });
    // Idle but ingesting: streaming from the source, nobody watching, not publishing.
    await waitStatus((s) => s.state === "STREAMING" && s.frames.received > 15, "door STREAMING");
    expect(await status()).toMatchObject({ publishing: false, viewers: 0 });

    const browser = await launchChromium(onTestFinished);
    const viewer = await browser.newPeerPage(gw.url);
    const exchange = await viewer.watch(`${gw.url}/whep/door`);
    // Answered at once, before any publisher exists: the viewer waits for it.
    expect(exchange).toMatchObject({ status: 201, location: expect.stringContaining(`${gw.url}/whep/door/`) });
    const started = await waitStatus((s) => s.publishing && s.viewers === 1, "door publishing for its viewer", 10_000);
    expect(started.whip?.session_url).toContain(`${gw.url}/whip/door/`);

    const decoded = await waitFor(async () => {
      const s = await viewer.stats();
      return s !== null && s.framesDecoded > 0 && s.frameWidth > 0 ? s : undefined;
    }, { timeoutMs: 15_000, intervalMs: 100, message: "Chromium decodes the camera" });
    expect(decoded).toMatchObject({ frameWidth: 640, frameHeight: 360, codec: "video/H264" });
    const first = await waitFor(() => viewer.firstDecodedAt(), { message: "first decode time noted" });
    await waitFor(async () => ((await viewer.stats())?.framesDecoded ?? 0) >= decoded.framesDecoded + 15, { timeoutMs: 5_000, intervalMs: 100, message: "keeps decoding" });

    // A second viewer of the now running camera starts from the cached GOP.
    const second = await browser.newPeerPage(gw.url);
    const ex2 = await second.watch(`${gw.url}/whep/door`);
    expect(ex2.status).toBe(201);
    const first2 = await waitFor(() => second.firstDecodedAt(), { timeoutMs: 10_000, intervalMs: 50, message: "second viewer decodes" });
    await waitStatus((s) => s.viewers === 2, "two viewers counted at the owner", 5_000);
    await annotate(
      `idle camera: WHEP POST→first decoded frame ${(first - exchange.postAt).toFixed(0)} ms (POST→answer ${(exchange.answeredAt - exchange.postAt).toFixed(0)} ms); ` +
        `running camera: answer→first decoded frame ${(first2 - ex2.answeredAt).toFixed(0)} ms`,
    );

    // Both leave (Chromium sends a DTLS close_notify): publishing goes on for the linger time, then stops.
    // Taken before the leave, so it is no later than the node's own "last viewer left":
    // publishing cannot stop sooner than LINGER_MS after it, however late the polls below see things.
    const beforeLeave = performance.now();
    await second.closePeer();
    await viewer.closePeer();
    await waitStatus((s) => s.viewers === 0, "no viewers counted", 10_000);
    expect((await status())?.publishing).toBe(true);
    await waitStatus((s) => !s.publishing, "publishing stopped after the linger time", LINGER_MS + 10_000);
    const stoppedAfter = performance.now() - beforeLeave;
    await annotate(`publishing stopped ${stoppedAfter.toFixed(0)} ms after the viewers began to leave (linger ${LINGER_MS} ms)`);
    expect(stoppedAfter).toBeGreaterThanOrEqual(LINGER_MS);
    // The ingest goes on: the camera is still streaming, ready for the next viewer.
    expect((await status())?.state).toBe("STREAMING");

    // A gateway that dies stops refreshing its count: the owner forgets it after its TTL.
    const reply = await nc.request(subjects.ctl.cameraViewers("door"), JSON.stringify({ gateway: "ghost-gw", viewers: 3, ttl_ms: 1_000 }), { timeout: 2_000 });
    expect(reply.json()).toEqual({ ok: true, viewers: 3 });
    expect((await status())?.viewers).toBe(3);
    await waitStatus((s) => s.viewers === 0, "the dead gateway's count expired", 5_000);
    // A bad report is refused and changes nothing.
    const bad = await nc.request(subjects.ctl.cameraViewers("door"), JSON.stringify({ gateway: "ghost-gw", viewers: -1, ttl_ms: 1_000 }), { timeout: 2_000 });
    expect(bad.json()).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
  }, 120_000); // the waits above have deadlines of their own; this only bounds their sum

  it("Chromium publishes its fake camera over WHIP, and a second Chromium page decodes it", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);
    const cameras = await new Kvm(nc).open(BUCKETS.cameras);
    await cameras.put(kvKeys.camera("webcam"), JSON.stringify(CameraSpecSchema.parse({ id: "webcam", url: "rtsp://127.0.0.1:1/none", publish: "always" })));
    const gw = await gatewayOn(nats.url);

    const browser = await launchChromium(onTestFinished);
    const publisher = await browser.newPeerPage(gw.url);
    expect(await publisher.publish(`${gw.url}/whip/webcam`)).toMatchObject({ status: 201, location: expect.stringContaining("/whip/webcam/") });
    const viewer = await browser.newPeerPage(gw.url);
    expect((await viewer.watch(`${gw.url}/whep/webcam`)).status).toBe(201);
    const decoded = await waitFor(async () => {
      const s = await viewer.stats();
      return s !== null && s.framesDecoded > 10 && s.frameWidth > 0 ? s : undefined;
    }, { timeoutMs: 20_000, intervalMs: 100, message: "the second page decodes the first page's camera" });
    expect(decoded).toMatchObject({ frameWidth: 640, frameHeight: 480, codec: "video/H264" });
    // Chromium's viewer is served by the lean SRTP path too (werift's answer negotiates no header extensions).
    const relay = (await (await fetch(`${gw.url}/webrtc/stats?id=webcam`)).json()) as { cameras: Array<{ viewers_lean: number }> };
    expect(relay.cameras[0]?.viewers_lean).toBe(1);
  });
});
