/**
 * Media pieces both the camera actor and the gateway's relay use, each with
 * one home: H.264 NAL units (h264.ts) and their
 * depacketizing into Annex-B (h264-annexb.ts), RTP packets (rtp.ts), SDP text
 * (sdp.ts), werift peer settings (webrtc.ts), the GOP cache, the lean SRTP
 * sender, the WHIP client and its HTTP. Imports werift and subjects/ only.
 */
export { GopCache } from "./gop-cache.ts";
export type { GopCacheOptions } from "./gop-cache.ts";
export { H264_NAL, h264NalTypes, onlyParameterSets, startsKeyFrame } from "./h264.ts";
export { rtpToAnnexB } from "./h264-annexb.ts";
export type { AnnexB } from "./h264-annexb.ts";
export type { H264NalType } from "./h264.ts";
export { rtpHeader, rtpHeaderLength, rtpPayload } from "./rtp.ts";
export type { RtpHeader } from "./rtp.ts";
export { checkOffer, keepLoopbackCandidates, MAX_SDP_BYTES } from "./sdp.ts";
export type { OfferSummary } from "./sdp.ts";
export { openSrtpSender } from "./srtp-sender.ts";
export type { SrtpSender, SrtpSenderStats } from "./srtp-sender.ts";
export { h264PeerConfig, isLoopbackPair, LOOPBACK } from "./webrtc.ts";
export { startWhip } from "./whip-client.ts";
export type { WhipOptions, WhipSession } from "./whip-client.ts";
export { checkRedirect, whipHttp, WhipRedirectError } from "./whip-http.ts";
export type { WhipHttpRequest, WhipHttpResponse } from "./whip-http.ts";
