// A tiny WHIP server for bench/camera.ts, run in its own process so its CPU
// is not counted as the camera actor's: POST /whip/:camera → werift answers
// recvonly (ICE on 127.0.0.1 only) and counts RTP packets per camera;
// DELETE on the session → 200; GET /stats → {cameras: {id: {packets, bytes}}, cpu_us}.
// Prints `READY http://127.0.0.1:PORT` on stdout once it listens.
//
//   node --import tsx bench/whip-receiver.ts
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { RTCPeerConnection, useH264 } from "werift";
import { keepLoopbackCandidates } from "../media/index.ts";

const HOST = "127.0.0.1";
const counts = new Map<string, { packets: number; bytes: number }>();
const sessions = new Map<string, RTCPeerConnection>();
let nextSession = 0;

async function answer(camera: string, offer: string): Promise<string> {
  const pc = new RTCPeerConnection({
    codecs: { video: [useH264()], audio: [] },
    iceServers: [],
    iceAdditionalHostAddresses: [HOST],
    iceFilterCandidatePair: (pair) => pair.localCandidate.host === HOST && pair.remoteCandidate.host === HOST,
  });
  let c = counts.get(camera);
  if (!c) counts.set(camera, (c = { packets: 0, bytes: 0 }));
  const count = c;
  pc.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((rtp) => {
      count.packets++;
      count.bytes += rtp.payload.length;
    });
  });
  await pc.setRemoteDescription({ type: "offer", sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  const id = `${camera}/session/${++nextSession}`;
  sessions.set(id, pc);
  return JSON.stringify({ id, sdp: keepLoopbackCandidates(pc.localDescription!.sdp) });
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks).toString("utf8");
  const path = new URL(req.url ?? "/", `http://${HOST}`).pathname;
  if (req.method === "GET" && path === "/stats") {
    const u = process.cpuUsage();
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ cameras: Object.fromEntries(counts), cpu_us: u.user + u.system }));
    return;
  }
  const post = /^\/whip\/([A-Za-z0-9_-]+)$/.exec(path);
  if (req.method === "POST" && post) {
    const { id, sdp } = JSON.parse(await answer(post[1]!, body)) as { id: string; sdp: string };
    res.writeHead(201, { "content-type": "application/sdp", location: `/whip/${id}` }).end(sdp);
    return;
  }
  const del = /^\/whip\/([A-Za-z0-9_-]+\/session\/\d+)$/.exec(path);
  if (req.method === "DELETE" && del) {
    const pc = sessions.get(del[1]!);
    sessions.delete(del[1]!);
    res.writeHead(200).end();
    await pc?.close();
    return;
  }
  res.writeHead(404).end();
}

const server = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    if (!res.headersSent) res.writeHead(500).end(String(err));
  });
});
server.listen(0, HOST, () => {
  process.stdout.write(`READY http://${HOST}:${(server.address() as AddressInfo).port}\n`);
});
const shutdown = () => {
  server.closeAllConnections();
  server.close();
  void Promise.all([...sessions.values()].map((pc) => pc.close())).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
