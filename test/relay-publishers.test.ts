// Who may publish and watch through the relay (found in review): only a
// camera's owner publishes it, at its lease epoch; an external WHIP source
// only while no node holds the camera; a new publisher takes over only once
// connected; a live publisher has viewers whatever the spec says; viewer
// limits hold under concurrent offers; a viewer that never connects keeps
// nothing publishing. Real nats-server, the gateway in-process, FFmpeg's
// H.264 through our WHIP client, werift viewers; the test plays the owner
// node by writing its lease and answering its viewer reports.

import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { startWhip } from "../media/index.ts";
import type { Gateway } from "../gateway/index.ts";
import { ensureJetStream } from "../runtime/index.ts";
import { BUCKETS, CameraSpecSchema, kvKeys, PUBLISHER_EPOCH_HEADER, PUBLISHER_NODE_HEADER, subjects, type CameraSpecInput } from "../subjects/index.ts";
import { LOG_MESSAGES } from "../runtime/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startFfmpegRtp, weriftOffer, whepViewer } from "./helpers/relay-peers.ts";
import { waitFor } from "./helpers/wait.ts";

async function cluster(env: Record<string, string> = {}) {
  const nats = await startNats({ onCleanup: onTestFinished });
  const second = () => startTestGateway({ natsUrl: nats.url, env, onCleanup: onTestFinished });
  const nc: NatsConnection = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  await ensureJetStream(nc);
  const kvm = new Kvm(nc);
  const cameras: KV = await kvm.open(BUCKETS.cameras);
  const leases: KV = await kvm.open(BUCKETS.leases);
  const putCamera = (spec: CameraSpecInput) => cameras.put(kvKeys.camera(spec.id), JSON.stringify(CameraSpecSchema.parse(spec)));
  /** The lease a node would hold; the epoch is its revision, as the nodes make it. */
  const lease = async (camera: string, node: string) => {
    const now = Date.now();
    const rev = await leases.put(kvKeys.lease(camera), JSON.stringify({ camera, node, epoch: 0, acquired_ts: now, renewed_ts: now }));
    await leases.put(kvKeys.lease(camera), JSON.stringify({ camera, node, epoch: rev + 1, acquired_ts: now, renewed_ts: now }));
    return rev + 1;
  };
  const gw = await startTestGateway({ natsUrl: nats.url, env, onCleanup: onTestFinished });
  return { nats, nc, putCamera, lease, gw, second };
}

/** Our WHIP client fed by FFmpeg, with optional publisher headers; resolves when up or failed. */
async function publish(url: string, headers?: Record<string, string>) {
  const ffmpeg = await startFfmpegRtp({ onCleanup: onTestFinished, gop: 15 });
  const outcome = { up: 0, failed: [] as string[] };
  const session = startWhip({ url, loopbackOnly: true, ...(headers !== undefined ? { headers } : {}), onUp: () => outcome.up++, onFailed: (d) => outcome.failed.push(d) });
  onTestFinished(() => session.stop());
  ffmpeg.onPacket((p) => session.writeRtp(p));
  await waitFor(() => outcome.up > 0 || outcome.failed.length > 0, { timeoutMs: 10_000, message: "WHIP publisher up or refused" });
  return outcome;
}

const postSdp = (url: string, sdp: string, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/sdp", ...headers }, body: sdp });

const stats = async (gw: Gateway, id: string) =>
  ((await (await fetch(`${gw.url}/webrtc/stats?id=${id}`)).json()) as { cameras: Array<{ publishing: boolean; viewers: number; publisher?: { session: string; connected: boolean } }> }).cameras[0];

const who = (node: string, epoch: number) => ({ [PUBLISHER_NODE_HEADER]: node, [PUBLISHER_EPOCH_HEADER]: String(epoch) });

describe("relay: who may publish", () => {
  it("a camera a node holds: its owner at its epoch publishes; an external source, another node and an older epoch get 409", async () => {
    const { putCamera, lease, gw } = await cluster();
    await putCamera({ id: "gate", url: "rtsp://127.0.0.1:1/x", publish: "always" });
    const epoch = await lease("gate", "n1");

    for (const [headers, message] of [
      [{}, /run by node n1: only its owner may publish/],
      [who("n2", epoch), /n2 \(epoch \d+\) is not its owner/],
      [who("n1", epoch - 1), /holds an older lease/],
    ] as const) {
      const offer = await weriftOffer("sendonly");
      onTestFinished(() => offer.close());
      const res = await postSdp(`${gw.url}/whip/gate`, offer.sdp, headers);
      expect(res.status).toBe(409);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("CONFLICT");
      expect(body.error.message).toMatch(message);
    }
    expect(await stats(gw, "gate")).toBeUndefined(); // nothing was set up for the refused ones

    const bad = await weriftOffer("sendonly");
    onTestFinished(() => bad.close());
    expect((await postSdp(`${gw.url}/whip/gate`, bad.sdp, { [PUBLISHER_NODE_HEADER]: "n1" })).status).toBe(400);

    expect((await publish(`${gw.url}/whip/gate`, who("n1", epoch))).failed).toEqual([]);
    await waitFor(async () => (await stats(gw, "gate"))?.publishing === true, { message: "the owner is on the air" });
  });

  it("an external source publishes a camera no node holds, and has viewers even with publish \"off\" or disabled", async () => {
    const { putCamera, gw } = await cluster();
    await putCamera({ id: "obs", url: "rtsp://127.0.0.1:1/x", publish: "off", enabled: false });
    const offer = await weriftOffer("recvonly");
    onTestFinished(() => offer.close());
    // Nothing on the air yet: watching a publish "off" camera is a conflict.
    expect((await postSdp(`${gw.url}/whep/obs`, offer.sdp)).status).toBe(409);

    expect((await publish(`${gw.url}/whip/obs`)).failed).toEqual([]);
    await waitFor(async () => (await stats(gw, "obs"))?.publishing === true, { message: "the external source is on the air" });
    const viewer = await whepViewer(`${gw.url}/whep/obs`, { onCleanup: onTestFinished });
    await waitFor(() => viewer.received.keyFrames > 0, { timeoutMs: 10_000, message: "the viewer gets the external source's video" });
  });

  it("a second publisher takes over only once connected: one that never connects leaves the live one on the air", async () => {
    const { putCamera, gw } = await cluster();
    await putCamera({ id: "dock", url: "rtsp://127.0.0.1:1/x", publish: "always" });
    expect((await publish(`${gw.url}/whip/dock`)).failed).toEqual([]);
    const viewer = await whepViewer(`${gw.url}/whep/dock`, { onCleanup: onTestFinished });
    await waitFor(() => viewer.received.keyFrames > 0, { timeoutMs: 10_000, message: "the viewer receives" });
    const live = (await stats(gw, "dock"))!.publisher!.session;

    // An offer whose peer never finishes ICE (its answer is never applied).
    const ghost = await weriftOffer("sendonly");
    onTestFinished(() => ghost.close());
    expect((await postSdp(`${gw.url}/whip/dock`, ghost.sdp)).status).toBe(201);
    const packets = viewer.received.packets;
    await waitFor(() => viewer.received.packets > packets + 100, { timeoutMs: 10_000, message: "the viewer keeps receiving the live publisher" });
    expect((await stats(gw, "dock"))!.publisher).toMatchObject({ session: live, connected: true });

    // A real second publisher does take over, once connected.
    expect((await publish(`${gw.url}/whip/dock`)).failed).toEqual([]);
    await waitFor(async () => (await stats(gw, "dock"))!.publisher!.session !== live, { message: "the connected newcomer replaced it" });
  });
});

describe("relay: a real node behind two gateways with an API token", () => {
  it("the node's WHIP POST is redirected to the gateway holding the relay and keeps its token there, and its epoch is accepted", async () => {
    const TOKEN = "two-gateways-token";
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/yard", width: 320, height: 240, fps: 10 }] });
    const { nats, putCamera, gw: a, second } = await cluster({ CAMFLEET_API_TOKEN: TOKEN });
    const b = await second();
    const node = runCamfleet(["node"], {
      env: { NATS_URL: nats.url, NODE_ID: "cam-node", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", CAMFLEET_API_TOKEN: TOKEN, WHIP_URL: `${a.url}/whip/{camera}` },
      onCleanup: onTestFinished,
    });
    await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
    await putCamera({ id: "yard", url: cam.url("/yard"), publish: "on-demand" });
    // The viewer comes to B first, so B holds the relay and A must redirect the node's publish there.
    const viewer = await whepViewer(`${b.url}/whep/yard`, { onCleanup: onTestFinished, token: TOKEN });
    await waitFor(() => viewer.received.keyFrames > 0, { timeoutMs: 30_000, message: "the viewer at B gets the node's video" });
    const atB = (await (await fetch(`${b.url}/webrtc/stats?id=yard`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { cameras: Array<{ publishing: boolean }> };
    expect(atB.cameras[0]?.publishing).toBe(true);
    expect(JSON.stringify(node.lines)).not.toContain(TOKEN);
  });
});

describe("relay: offers", () => {
  it("an offer without a=ice-pwd is 400 (it used to get a 201 for a session that died at once)", async () => {
    const { putCamera, gw } = await cluster();
    await putCamera({ id: "hall", url: "rtsp://127.0.0.1:1/x", publish: "always" });
    const offer = await weriftOffer("recvonly");
    onTestFinished(() => offer.close());
    const res = await postSdp(`${gw.url}/whep/hall`, offer.sdp.split("\r\n").filter((l) => !l.startsWith("a=ice-pwd:")).join("\r\n"));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/missing a=ice-pwd/);
    expect(await stats(gw, "hall")).toBeUndefined();
  });
});

describe("relay: viewer limits and counts", () => {
  it("concurrent offers cannot pass RELAY_MAX_VIEWERS_PER_CAMERA", async () => {
    const { putCamera, gw } = await cluster({ RELAY_MAX_VIEWERS_PER_CAMERA: "2" });
    await putCamera({ id: "hall", url: "rtsp://127.0.0.1:1/x", publish: "always" });
    const offers = await Promise.all(Array.from({ length: 6 }, () => weriftOffer("recvonly")));
    onTestFinished(() => Promise.all(offers.map((o) => o.close())).then(() => undefined));
    const statuses = await Promise.all(offers.map(async (o) => (await postSdp(`${gw.url}/whep/hall`, o.sdp)).status));
    expect(statuses.filter((s) => s === 201)).toHaveLength(2);
    expect(statuses.filter((s) => s === 503)).toHaveLength(4);
    expect((await stats(gw, "hall"))!.viewers).toBe(2);
  });

  it("the owner is told only of viewers that connected: an offer that never connects keeps no camera publishing", async () => {
    const { nc, putCamera, lease, gw } = await cluster();
    await putCamera({ id: "lobby", url: "rtsp://127.0.0.1:1/x", publish: "on-demand" });
    await lease("lobby", "n1");
    // The test is the owner node: it answers the gateway's viewer reports and keeps what they say.
    const reports: number[] = [];
    const sub = nc.subscribe(subjects.ctl.cameraViewers("lobby"), {
      callback: (_e, msg) => {
        const { viewers } = msg.json<{ viewers: number }>();
        reports.push(viewers);
        msg.respond(JSON.stringify({ ok: true, viewers }));
      },
    });
    onTestFinished(async () => sub.unsubscribe());

    const ghost = await weriftOffer("recvonly");
    onTestFinished(() => ghost.close());
    expect((await postSdp(`${gw.url}/whep/lobby`, ghost.sdp)).status).toBe(201);
    const viewer = await whepViewer(`${gw.url}/whep/lobby`, { onCleanup: onTestFinished });
    await waitFor(() => viewer.received.connectedAt !== undefined, { message: "the real viewer connected" });
    await waitFor(() => reports.at(-1) === 1, { message: "the owner hears of one viewer" });
    // Two sessions at the relay, one counted: the one that never connected is not.
    expect((await stats(gw, "lobby"))!.viewers).toBe(2);
    expect(reports.every((n) => n <= 1)).toBe(true);
  });
});
