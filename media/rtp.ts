/**
 * Serialized RTP packets (RFC 3550 §5.1) read without a parser object: the
 * relay, the camera's GOP cache, the ingest's socket and the lean SRTP
 * sender each need a field or two, on the hot path.
 */

export interface RtpHeader {
  /** Marker bit: for H.264, the last packet of a frame. */
  marker: boolean;
  payloadType: number;
  sequenceNumber: number;
  /** Media time, in the payload's clock (90 kHz for video). */
  timestamp: number;
  ssrc: number;
}

const RTP_VERSION = 2;
const FIXED_HEADER = 12;

/** Length of a serialized RTP packet's fixed header, CSRCs and header extension; undefined if it is not RTP (or is cut short). */
export function rtpHeaderLength(packet: Buffer): number | undefined {
  if (packet.length < FIXED_HEADER || packet[0]! >> 6 !== RTP_VERSION) return undefined;
  let length = FIXED_HEADER + (packet[0]! & 0x0f) * 4;
  if (packet[0]! & 0x10) {
    if (packet.length < length + 4) return undefined;
    length += 4 + packet.readUInt16BE(length + 2) * 4;
  }
  return length <= packet.length ? length : undefined;
}

/** The fixed header's fields; undefined if it is not RTP (version 2, a complete header). */
export function rtpHeader(packet: Buffer): RtpHeader | undefined {
  if (rtpHeaderLength(packet) === undefined) return undefined;
  return {
    marker: (packet[1]! & 0x80) !== 0,
    payloadType: packet[1]! & 0x7f,
    sequenceNumber: packet.readUInt16BE(2),
    timestamp: packet.readUInt32BE(4),
    ssrc: packet.readUInt32BE(8),
  };
}

/** The payload of a serialized RTP packet (after CSRCs and header extension, without padding), or undefined if it is not RTP. */
export function rtpPayload(packet: Buffer): Buffer | undefined {
  const headerLength = rtpHeaderLength(packet);
  if (headerLength === undefined) return undefined;
  // Padding bit: the last byte counts the padding bytes, itself included.
  const padding = packet[0]! & 0x20 && packet.length > headerLength ? packet[packet.length - 1]! : 0;
  return packet.subarray(headerLength, Math.max(headerLength, packet.length - padding));
}
