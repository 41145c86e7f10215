import { useH264, type CandidatePair, type RTCPeerConnectionConfig } from "werift";

/**
 * werift settings shared by every peer camfleet runs: the camera's WHIP
 * publisher and the gateway's relay. What they do to SDP text is sdp.ts;
 * RTP packets are rtp.ts; H.264 inside them is h264.ts.
 */

export const LOOPBACK = "127.0.0.1";

/**
 * werift settings for an H.264-only peer (as found with werift 0.25: the default codec is
 * VP8 only, the default ICE server is a public STUN server that cannot be
 * reached, and loopback is not gathered unless asked for).
 */
export function h264PeerConfig(options: { loopbackOnly?: boolean } = {}): RTCPeerConnectionConfig {
  return {
    codecs: { video: [useH264()], audio: [] },
    iceServers: [],
    iceAdditionalHostAddresses: [LOOPBACK],
    ...(options.loopbackOnly === true ? { iceFilterCandidatePair: isLoopbackPair } : {}),
  };
}

/** A candidate pair with both ends on 127.0.0.1. */
export function isLoopbackPair(pair: CandidatePair): boolean {
  return pair.localCandidate.host === LOOPBACK && pair.remoteCandidate.host === LOOPBACK;
}
