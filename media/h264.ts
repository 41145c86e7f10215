/**
 * H.264 in RTP (RFC 6184), as far as camfleet looks into it: which NAL units
 * a packet carries, so a GOP can be cut at its IDR and a viewer can start at
 * a key frame. This is the only place that reads NAL headers; everything
 * else asks these functions.
 */

/** NAL unit types (H.264 table 7-1, RFC 6184 §5.2) camfleet tells apart. */
export const H264_NAL = {
  /** A slice of a frame that is not a key frame. */
  SLICE: 1,
  /** A slice of an IDR picture: a decoder can start here. */
  IDR: 5,
  SEI: 6,
  SPS: 7,
  PPS: 8,
  /** Access unit delimiter: FFmpeg's RTP output starts every frame with one. */
  AUD: 9,
  /** RTP aggregation packet: several small NAL units in one payload. */
  STAP_A: 24,
  /** RTP fragmentation unit: one NAL unit over several payloads. */
  FU_A: 28,
} as const;

export type H264NalType = number;

/** The type bits of a NAL header byte (forbidden bit and nal_ref_idc above them). */
const nalType = (headerByte: number): H264NalType => headerByte & 0x1f;
/** FU header: S bit, set on the first fragment of a NAL unit. */
const FU_START = 0x80;

/** H.264 NAL unit types in one RTP payload: single NAL, the units of a STAP-A, or the start of an FU-A (a continuation carries none). */
export function h264NalTypes(payload: Buffer): H264NalType[] {
  if (payload.length === 0) return [];
  const type = nalType(payload[0]!);
  if (type === H264_NAL.STAP_A) {
    const types: H264NalType[] = [];
    for (let i = 1; i + 2 < payload.length; ) {
      const size = payload.readUInt16BE(i);
      types.push(nalType(payload[i + 2]!));
      i += 2 + size;
    }
    return types;
  }
  if (type === H264_NAL.FU_A) return payload.length > 1 && payload[1]! & FU_START ? [nalType(payload[1]!)] : [];
  return [type];
}

/** The payload carries an IDR slice, or the start of one: a decoder can begin at this frame. */
export function startsKeyFrame(payload: Buffer): boolean {
  return typesStartKeyFrame(h264NalTypes(payload));
}

/** startsKeyFrame for NAL types already read (the GOP cache reads them once per packet). */
export function typesStartKeyFrame(types: readonly H264NalType[]): boolean {
  return types.includes(H264_NAL.IDR);
}

/**
 * The payload carries parameter sets (SPS, PPS), SEI or an access unit
 * delimiter and nothing else: what goes just before an IDR. FFmpeg's RTP
 * muxer sends an IDR's AUD, SPS and PPS together in one STAP-A.
 */
export function onlyParameterSets(payload: Buffer): boolean {
  return typesAreParameterSets(h264NalTypes(payload));
}

const PARAMETER_PREFIX: readonly number[] = [H264_NAL.SPS, H264_NAL.PPS, H264_NAL.SEI, H264_NAL.AUD];

/** onlyParameterSets for NAL types already read. */
export function typesAreParameterSets(types: readonly H264NalType[]): boolean {
  return types.length > 0 && types.some((t) => t !== H264_NAL.AUD) && types.every((t) => PARAMETER_PREFIX.includes(t));
}
