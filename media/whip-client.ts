import { MediaStreamTrack, RTCPeerConnection } from "werift";
import { silentMediaLogger, type MediaLogger } from "./log.ts";
import { openSrtpSender, type SrtpSender } from "./srtp-sender.ts";
import { rtpHeader } from "./rtp.ts";
import { keepLoopbackCandidates } from "./sdp.ts";
import { h264PeerConfig } from "./webrtc.ts";
import { redact } from "../subjects/index.ts";
import { whipHttp, type WhipHttpResponse } from "./whip-http.ts";

/**
 * One camera's WHIP publishing session (RFC 9725), with werift.
 *
 *   startWhip → offer (sendonly H.264, all candidates gathered: no trickle)
 *             → POST application/sdp → 201 + Location + answer
 *             → ICE + DTLS → onUp()
 *   failure anywhere (non-201, network, timeout, bad answer, ICE/DTLS failed or lost)
 *             → onFailed(detail), once; the session tears itself down.
 *   stop()    → DELETE the session (best effort) and close the peer connection.
 *
 * No retries here: the camera machine owns the backoff (WHIP_FAILED →
 * retrying → a new session).
 *
 * Key frames: the video is FFmpeg's H.264 copied as RTP, never re-encoded, so
 * nothing here can produce a key frame on demand. A viewer starts decoding at
 * the source's next IDR (its GOP decides how long that takes); a PLI from the
 * far side is only logged. FFmpeg's `h264_mp4toannexb` puts the source's
 * SPS/PPS in front of each IDR that lacks them, which is what lets a viewer
 * start at any IDR.
 */

export interface WhipOptions {
  /** The camera's WHIP endpoint (`whipUrlFor(config.whipUrl, camera)`). Never logged unredacted. */
  url: string;
  /**
   * Sent as `Authorization: Bearer <token>` on POST and DELETE, to the
   * endpoint's origin only, or to one `trustOrigin` vouches for (a redirect or
   * a session URL elsewhere). Never logged.
   */
  token?: string;
  /** More headers on the POST, e.g. the publishing node and its lease epoch (PUBLISHER_NODE_HEADER). Not secrets: they follow redirects. */
  headers?: Record<string, string>;
  /** Whether another origin may get the token (after a redirect, or for the DELETE of a session that lives there). */
  trustOrigin?: (origin: string) => boolean | Promise<boolean>;
  /** Default: silent. */
  logger?: MediaLogger;
  /** Called once, when ICE and DTLS are connected and media can flow. */
  onUp: () => void;
  /**
   * Called at most once, when the session could not be set up or broke down
   * afterwards; never after `stop()`. `detail` is redacted (no credentials).
   */
  onFailed: (detail: string) => void;
  /**
   * Keep only 127.0.0.1 UDP candidates: in the offer sent, in the answer
   * received, and in the candidate pairs checked. For tests and single-host
   * setups. Default false.
   */
  loopbackOnly?: boolean;
  /** Deadline of the POST, from sending the offer to a complete answer, ms. Default 5000. */
  requestTimeoutMs?: number;
  /** Deadline from the 201 answer to connected (ICE + DTLS), ms. Default 10000. */
  connectTimeoutMs?: number;
  /** Deadline of the DELETE sent by stop(), ms. Default 1000. */
  deleteTimeoutMs?: number;
}

export interface WhipSession {
  /**
   * One RTP packet as FFmpeg sent it (`-f rtp -payload_type 96`), sent with
   * the negotiated SSRC and payload type (media/srtp-sender.ts, or werift's
   * sender for sessions that path does not handle). Dropped while the session
   * is not connected, and when it is not RTP (e.g. RTCP sent to the same port).
   */
  writeRtp(packet: Buffer): void;
  /** DELETEs the session (best effort) and closes the peer connection. Idempotent; resolves once closed. */
  stop(): Promise<void>;
  /** The session URL from the 201's Location, resolved and redacted; undefined before the 201. */
  readonly sessionUrl: string | undefined;
  /** Seconds since the session came up; 0 while it is not up (before, and after a failure or stop()). */
  uptimeS(): number;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_DELETE_TIMEOUT_MS = 1_000;
/** How much of an error response body goes into the failure detail. */
const BODY_SNIPPET_CHARS = 200;

/** Starts publishing at once; the outcome arrives through `onUp` / `onFailed`. */
export function startWhip(options: WhipOptions): WhipSession {
  const log = (options.logger ?? silentMediaLogger()).child({ component: "whip" });
  const endpoint = options.url;
  const shownEndpoint = redact(endpoint);
  const loopbackOnly = options.loopbackOnly ?? false;
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const deleteTimeoutMs = options.deleteTimeoutMs ?? DEFAULT_DELETE_TIMEOUT_MS;
  const auth: Record<string, string> = options.token !== undefined ? { Authorization: `Bearer ${options.token}` } : {};

  // No STUN (a camera node reaches its relay directly), loopback gathered (a relay on the same host is common).
  const pc = new RTCPeerConnection(h264PeerConfig({ loopbackOnly }));
  const track = new MediaStreamTrack({ kind: "video" });
  const transceiver = pc.addTransceiver(track, { direction: "sendonly" });

  let phase: "negotiating" | "connecting" | "up" | "failed" | "stopped" = "negotiating";
  let sessionUrl: string | undefined;
  let upAt: number | undefined;
  let connectTimer: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;
  let pliCount = 0;
  let badPackets = 0;
  /** The lean RTP path (media/srtp-sender.ts) once up; undefined means werift's own sender.sendRtp. */
  let fastPath: SrtpSender | undefined;
  const post = new AbortController();
  /** performance.now() when the POST went out, and how long its answer took (ms); for the log. */
  let postStart = 0;
  let answerMs = 0;

  const settled = () => phase === "failed" || phase === "stopped";

  const fail = (detail: string) => {
    if (settled()) return;
    phase = "failed";
    upAt = undefined;
    const shown = redact(detail);
    log.warn({ url: shownEndpoint, detail: shown }, "WHIP session failed");
    void teardown();
    try {
      options.onFailed(shown);
    } catch (err) {
      log.error({ err }, "onFailed threw");
    }
  };

  const onConnectionState = (state: RTCPeerConnection["connectionState"]) => {
    if (settled()) return;
    if (state === "connected") {
      // Before the answer is applied there is nothing to be up for; the check after it comes back here.
      if (phase !== "connecting") return;
      clearTimeout(connectTimer);
      phase = "up";
      upAt = performance.now();
      fastPath = openSrtpSender(transceiver.sender, pc.localDescription?.sdp ?? "");
      log.info(
        {
          url: shownEndpoint,
          session: sessionUrl && redact(sessionUrl),
          answer_ms: answerMs,
          connect_ms: Math.round(upAt - postStart),
          rtp_path: fastPath?.profile ?? "werift",
        },
        "WHIP session up",
      );
      try {
        options.onUp();
      } catch (err) {
        log.error({ err }, "onUp threw");
      }
    } else if (state === "failed") {
      fail(phase === "up" ? "WebRTC connection failed (ICE/DTLS)" : "WebRTC connection could not be established (ICE/DTLS failed)");
    } else if (state === "disconnected") {
      fail("WebRTC connection lost (disconnected)");
    } else if (state === "closed") {
      fail("WebRTC connection closed");
    }
  };
  pc.connectionStateChange.subscribe(onConnectionState);

  // Copied H.264 cannot honour a picture-loss request; the next IDR comes when the source's GOP says.
  transceiver.sender.onPictureLossIndication.subscribe(() => {
    pliCount++;
    log.debug({ plis: pliCount }, "remote asked for a key frame (PLI); the copied stream sends its next IDR on its own schedule");
  });

  const negotiation = (async () => {
    let offerSdp: string;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      // No trickle: the offer carries every candidate. werift 0.25 resolves
      // setLocalDescription after gathering; the wait is for versions that do not.
      await gatheringComplete(pc, post.signal, requestTimeoutMs);
      const local = pc.localDescription;
      if (!local) throw new Error("no local description");
      // werift 0.25 does not turn the remote's DTLS close_notify into a connection state; without
      // this a closed remote is only noticed when ICE consent expires, 30 s later (RFC 7675).
      for (const dtls of pc.dtlsTransports) {
        dtls.onStateChange.subscribe((state) => {
          if (state === "closed") fail("the remote side closed the WebRTC session (DTLS close)");
          else if (state === "failed") fail("DTLS failed");
        });
      }
      offerSdp = loopbackOnly ? keepLoopbackCandidates(local.sdp) : local.sdp;
    } catch (err) {
      fail(`could not create the WHIP offer: ${messageOf(err)}`);
      return;
    }
    if (settled()) return;

    postStart = performance.now();
    let res: WhipHttpResponse;
    const timeout = setTimeout(() => post.abort(new WhipTimeoutError(requestTimeoutMs)), requestTimeoutMs);
    try {
      res = await whipHttp(endpoint, {
        method: "POST",
        headers: { ...options.headers, "Content-Type": "application/sdp", Accept: "application/sdp", ...auth },
        body: offerSdp,
        signal: post.signal,
        ...(options.trustOrigin !== undefined ? { trustOrigin: options.trustOrigin } : {}),
      });
    } catch (err) {
      if (settled()) return;
      const reason = post.signal.reason instanceof WhipTimeoutError ? post.signal.reason.message : networkReason(err);
      fail(`WHIP POST ${endpoint} failed: ${reason}`);
      return;
    } finally {
      clearTimeout(timeout);
    }
    answerMs = Math.round(performance.now() - postStart);

    const body = res.body;
    const location = res.headers.location;
    if (res.status === 201 && location) {
      try {
        // Relative to the URL that answered (after any 307 the server sent).
        sessionUrl = new URL(location, res.url).href;
      } catch {
        fail(`WHIP server answered 201 with an invalid Location header`);
        return;
      }
    }
    // stop() while the POST was in flight: teardown DELETEs what the server created.
    if (settled()) return;
    if (res.status !== 201) {
      const snippet = body.trim().slice(0, BODY_SNIPPET_CHARS).replace(/\s+/g, " ");
      fail(`WHIP POST ${endpoint} answered ${res.status}${res.statusText ? ` ${res.statusText}` : ""}${snippet ? `: ${snippet}` : ""}`);
      return;
    }
    if (!location) {
      fail(`WHIP server answered 201 without a Location header`);
      return;
    }
    log.debug({ url: shownEndpoint, session: redact(sessionUrl ?? ""), answer_ms: answerMs }, "WHIP answer received");

    try {
      if (!/^v=0\r?\n/.test(body)) throw new Error("the body is not an SDP (it does not start with v=0)");
      const contentType = res.headers["content-type"] ?? "";
      if (!/^application\/sdp\b/i.test(contentType)) log.debug({ contentType }, "WHIP answer without Content-Type application/sdp");
      await pc.setRemoteDescription({ type: "answer", sdp: loopbackOnly ? keepLoopbackCandidates(body) : body });
      const direction = transceiver.currentDirection;
      if (direction !== "sendonly" && direction !== "sendrecv") {
        throw new Error(`the video was not accepted (direction ${direction ?? "none"})`);
      }
      if (!transceiver.sender.codec || !/^video\/H264$/i.test(transceiver.sender.codec.mimeType)) {
        throw new Error("H.264 was not accepted");
      }
    } catch (err) {
      fail(`bad WHIP answer: ${messageOf(err)}`);
      return;
    }
    if (settled()) return;
    phase = "connecting";
    connectTimer = setTimeout(() => fail(`WebRTC connection not established within ${connectTimeoutMs} ms`), connectTimeoutMs);
    // It may have connected while setRemoteDescription was running.
    onConnectionState(pc.connectionState);
  })();

  const teardown = (): Promise<void> => {
    closing ??= (async () => {
      clearTimeout(connectTimer);
      post.abort();
      await negotiation;
      const tasks: Promise<unknown>[] = [pc.close().catch((err: unknown) => log.debug({ err: messageOf(err) }, "closing the peer connection failed"))];
      if (sessionUrl !== undefined) tasks.push(deleteSession(sessionUrl));
      await Promise.all(tasks);
      track.stop();
      if (fastPath !== undefined) {
        fastPath.close();
        const sent = fastPath.stats();
        badPackets += sent.dropped;
        log.debug({ ...sent }, "WHIP RTP sent");
      }
      if (badPackets > 0) log.debug({ dropped: badPackets }, "packets that were not RTP were dropped");
    })();
    return closing;
  };

  const deleteSession = async (url: string): Promise<void> => {
    try {
      // The session may live on another origin (after a redirect): the token goes there only if that origin is trusted.
      const target = new URL(url).origin;
      const trusted = target === new URL(endpoint).origin || (await options.trustOrigin?.(target)) === true;
      const res = await whipHttp(url, { method: "DELETE", headers: trusted ? auth : {}, signal: AbortSignal.timeout(deleteTimeoutMs) });
      if (res.status < 200 || res.status > 299) log.debug({ session: redact(url), status: res.status }, "WHIP DELETE refused");
    } catch (err) {
      log.debug({ session: redact(url), err: redact(networkReason(err)) }, "WHIP DELETE failed");
    }
  };

  return {
    writeRtp(packet: Buffer): void {
      if (phase !== "up") return;
      if (fastPath !== undefined) {
        fastPath.send(packet);
        return;
      }
      // RTP version 2, and not RTCP (payload types 72–76 are RTCP's, RFC 5761 §4).
      const pt = rtpHeader(packet)?.payloadType;
      if (pt === undefined || (pt >= 72 && pt <= 76)) {
        badPackets++;
        return;
      }
      // werift's own path, for a session the lean one does not handle. Straight to the
      // sender: track.writeRtp would parse and copy each packet once more on its way.
      transceiver.sender.sendRtp(packet).catch(() => badPackets++);
    },
    stop(): Promise<void> {
      if (!settled()) {
        phase = "stopped";
        upAt = undefined;
      }
      return teardown();
    },
    get sessionUrl() {
      return sessionUrl === undefined ? undefined : redact(sessionUrl);
    },
    uptimeS(): number {
      return upAt === undefined ? 0 : (performance.now() - upAt) / 1000;
    },
  };
}

/** The POST ran past its deadline. */
class WhipTimeoutError extends Error {
  override name = "WhipTimeoutError";
  constructor(readonly timeoutMs: number) {
    super(`no answer within ${timeoutMs} ms`);
  }
}


function gatheringComplete(pc: RTCPeerConnection, signal: AbortSignal, timeoutMs: number): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      unSubscribe();
      signal.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => done(new Error("stopped while gathering ICE candidates"));
    const timer = setTimeout(() => done(new Error(`ICE gathering not complete within ${timeoutMs} ms`)), timeoutMs);
    const { unSubscribe } = pc.iceGatheringStateChange.subscribe((state) => {
      if (state === "complete") done();
    });
    signal.addEventListener("abort", onAbort);
  });
}

/** A network error's reason with its code (ECONNREFUSED, …) in front when the message lacks it. */
function networkReason(err: unknown): string {
  if (!(err instanceof Error)) return messageOf(err);
  const code = (err as NodeJS.ErrnoException).code;
  return code && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
