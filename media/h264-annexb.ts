import { H264_NAL } from "./h264.ts";
import { rtpHeader, rtpPayload } from "./rtp.ts";

/**
 * H.264 RTP packets (RFC 6184, packetization mode 1: single NAL units,
 * STAP-A, FU-A) back into an Annex-B byte stream, the form a decoder such as
 * FFmpeg's `-f h264` reads. Used to decode a camera's cached GOP into a
 * snapshot; the video path itself never depacketizes (it copies RTP).
 */

const START_CODE = Buffer.from([0, 0, 0, 1]);
/** FU header bits (RFC 6184 §5.8). */
const FU_START = 0x80;
const FU_END = 0x40;
/** The NAL header's forbidden bit and nal_ref_idc, kept from the FU indicator. */
const NAL_F_NRI = 0xe0;
const NAL_TYPE = 0x1f;

export interface AnnexB {
  /** NAL units, each after a 4-byte start code. */
  data: Buffer;
  /** Complete access units (frames) with at least one slice: what a decoder outputs from `data`. */
  frames: number;
}

/**
 * Depacketizes `packets` (in sequence order) up to the last complete access
 * unit, the one ending with the marker bit: a frame whose packets are still
 * arriving is left out, so the last frame decoded is whole. A NAL unit that
 * lost a fragment (a gap in sequence numbers inside an FU-A) is dropped,
 * rather than handed to the decoder cut short. Packets that are not RTP, and
 * the modes camfleet never receives (STAP-B, MTAP, FU-B), are skipped.
 */
export function rtpToAnnexB(packets: readonly Buffer[]): AnnexB {
  let end = -1;
  for (let i = packets.length - 1; i >= 0; i--) {
    if (rtpHeader(packets[i]!)?.marker === true) {
      end = i;
      break;
    }
  }
  const out: Buffer[] = [];
  let frames = 0;
  /** Timestamp of the access unit being read, and whether a slice of it was emitted. */
  let auTs: number | undefined;
  let auHasSlice = false;
  /** The FU-A being reassembled: its pieces (NAL header first) and the sequence number expected next. */
  let fragment: { pieces: Buffer[]; nextSeq: number } | undefined;

  const emit = (nal: Buffer | Buffer[]) => {
    out.push(START_CODE);
    if (Array.isArray(nal)) out.push(...nal);
    else out.push(nal);
    const type = (Array.isArray(nal) ? nal[0]![0]! : nal[0]!) & NAL_TYPE;
    if (type >= H264_NAL.SLICE && type <= H264_NAL.IDR) auHasSlice = true;
  };

  for (let i = 0; i <= end; i++) {
    const packet = packets[i]!;
    const header = rtpHeader(packet);
    const payload = rtpPayload(packet);
    if (header === undefined || payload === undefined || payload.length === 0) continue;
    if (header.timestamp !== auTs) {
      if (auHasSlice) frames++;
      auTs = header.timestamp;
      auHasSlice = false;
      fragment = undefined;
    }
    const type = payload[0]! & NAL_TYPE;
    if (type >= 1 && type <= 23) {
      emit(payload);
    } else if (type === H264_NAL.STAP_A) {
      for (let at = 1; at + 2 <= payload.length; ) {
        const size = payload.readUInt16BE(at);
        at += 2;
        if (size === 0 || at + size > payload.length) break; // a malformed aggregate: keep what was whole
        emit(payload.subarray(at, at + size));
        at += size;
      }
    } else if (type === H264_NAL.FU_A && payload.length > 2) {
      const fu = payload[1]!;
      if (fu & FU_START) {
        const nalHeader = Buffer.from([(payload[0]! & NAL_F_NRI) | (fu & NAL_TYPE)]);
        fragment = { pieces: [nalHeader, payload.subarray(2)], nextSeq: header.sequenceNumber };
      } else if (fragment === undefined || header.sequenceNumber !== fragment.nextSeq) {
        fragment = undefined; // a fragment is missing: the unit cannot be rebuilt
        continue;
      } else {
        fragment.pieces.push(payload.subarray(2));
      }
      fragment.nextSeq = (header.sequenceNumber + 1) & 0xffff;
      if (fu & FU_END) {
        emit(fragment.pieces);
        fragment = undefined;
      }
    }
  }
  if (auHasSlice) frames++;
  return { data: Buffer.concat(out), frames };
}
