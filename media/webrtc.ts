import { useH264, type CandidatePair, type RTCPeerConnectionConfig } from "werift";

/**
 * WebRTC settings and SDP helpers shared by every werift peer camfleet runs:
 * the camera's WHIP publisher (actors/) and the gateway's relay (gateway/).
 * They live here because both may import runtime/, and neither may import
 * the other.
 */

export const LOOPBACK = "127.0.0.1";

/**
 * werift settings for an H.264-only peer (FIELD-NOTES: the default codec is
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

/**
 * Drops every `a=candidate` line that is not a UDP candidate on 127.0.0.1.
 * For loopback-only setups (tests): peers offer all their interfaces.
 */
export function keepLoopbackCandidates(sdp: string): string {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  return sdp
    .split(eol)
    .filter((line) => {
      if (!line.startsWith("a=candidate:")) return true;
      // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …
      const fields = line.slice("a=candidate:".length).split(" ");
      return fields[2]?.toLowerCase() === "udp" && fields[4] === LOOPBACK;
    })
    .join(eol);
}

/** A candidate pair with both ends on 127.0.0.1. */
export function isLoopbackPair(pair: CandidatePair): boolean {
  return pair.localCandidate.host === LOOPBACK && pair.remoteCandidate.host === LOOPBACK;
}

/** H.264 NAL unit types in one RTP payload (RFC 6184): single NAL, STAP-A, or the start of an FU-A. */
export function h264NalTypes(payload: Buffer): number[] {
  if (payload.length === 0) return [];
  const type = payload[0]! & 0x1f;
  if (type === 24) {
    const types: number[] = [];
    for (let i = 1; i + 2 < payload.length; ) {
      const size = payload.readUInt16BE(i);
      types.push(payload[i + 2]! & 0x1f);
      i += 2 + size;
    }
    return types;
  }
  if (type === 28) return payload.length > 1 && payload[1]! & 0x80 ? [payload[1]! & 0x1f] : [];
  return [type];
}

/** Length of a serialized RTP packet's fixed header, CSRCs and header extension; undefined if it is not RTP (or is cut short). */
export function rtpHeaderLength(packet: Buffer): number | undefined {
  if (packet.length < 12 || packet[0]! >> 6 !== 2) return undefined;
  let length = 12 + (packet[0]! & 0x0f) * 4;
  if (packet[0]! & 0x10) {
    if (packet.length < length + 4) return undefined;
    length += 4 + packet.readUInt16BE(length + 2) * 4;
  }
  return length <= packet.length ? length : undefined;
}

/** The payload of a serialized RTP packet (after CSRCs and header extension), or undefined if it is not RTP. */
export function rtpPayload(packet: Buffer): Buffer | undefined {
  const headerLength = rtpHeaderLength(packet);
  return headerLength === undefined ? undefined : packet.subarray(headerLength);
}
