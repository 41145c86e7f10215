/**
 * Media pieces both the camera actor and the gateway's relay use: H.264 and
 * RTP helpers, the GOP cache, the lean SRTP sender, the WHIP client and its
 * HTTP, SDP checks. Imports werift and subjects/ only.
 */
export { GopCache } from "./gop-cache.ts";
export { checkOffer, MAX_SDP_BYTES, startsKeyFrame } from "./sdp.ts";
export type { OfferSummary } from "./sdp.ts";
export { openSrtpSender } from "./srtp-sender.ts";
export type { SrtpSender, SrtpSenderStats } from "./srtp-sender.ts";
export { h264NalTypes, h264PeerConfig, isLoopbackPair, keepLoopbackCandidates, LOOPBACK, rtpHeaderLength, rtpPayload } from "./webrtc.ts";
export { startWhip } from "./whip-client.ts";
export type { WhipOptions, WhipSession } from "./whip-client.ts";
export { whipHttp } from "./whip-http.ts";
export type { WhipHttpRequest, WhipHttpResponse } from "./whip-http.ts";
