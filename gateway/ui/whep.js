// One WHEP viewer session (POST /whep/{id}, the gateway's relay) into a <video>.
// The gateway answers a camera held by another gateway with a 307, which fetch
// follows with the same method and body.
import { authHeaders, ApiError } from "./api.js";

/** Live sessions by camera id, for a look from the console or a test: off-screen tiles have none. */
export const peers = new Map();
globalThis.camfleet = { peers };

/** The ICE candidates are all in the offer (the gateway does no trickle ICE); a slow interface may not hold it up for long. */
function gathered(pc, timeoutMs = 2000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * Starts watching `camera` in `video`. Resolves with {close()} once the
 * answer is set; `onEnd(reason)` is called if the session fails later.
 */
export async function watch(camera, video, onEnd) {
  const pc = new RTCPeerConnection();
  let location;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    if (peers.get(camera) === pc) peers.delete(camera);
    // The relay would notice in 5 s without RTCP; telling it frees the session (and an on-demand camera's publishing) at once.
    // Sent before the close: once the peer connection is gone the relay may end the session itself, and the DELETE would be a 404.
    if (location !== undefined) void fetch(location, { method: "DELETE", headers: authHeaders(), keepalive: true }).catch(() => undefined);
    pc.close();
    video.srcObject = null;
  };
  try {
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (e) => {
      video.srcObject = new MediaStream([e.track]);
      void video.play().catch(() => undefined);
    };
    pc.onconnectionstatechange = () => {
      if (!closed && (pc.connectionState === "failed" || pc.connectionState === "closed")) {
        close();
        onEnd(`WebRTC ${pc.connectionState}`);
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const res = await fetch(`/whep/${encodeURIComponent(camera)}`, {
      method: "POST",
      headers: authHeaders({ "content-type": "application/sdp" }),
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) {
      let e;
      try {
        e = (await res.json()).error;
      } catch {
        e = undefined;
      }
      throw new ApiError(res.status, e?.code ?? `HTTP_${res.status}`, e?.message ?? res.statusText);
    }
    const loc = res.headers.get("location");
    if (loc) location = new URL(loc, res.url).href;
    const answer = await res.text();
    if (closed) return { close };
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    peers.set(camera, pc);
    return { close, pc };
  } catch (err) {
    close();
    throw err;
  }
}
