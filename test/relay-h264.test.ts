// The pure parts of the relay: offer checks (400 / 406), the GOP cache the
// camera and the relay share, and the H.264/RTP readers under it, on
// hand-made packets (no process, no network).

import { describe, expect, it } from "vitest";
import { checkOffer, GopCache, H264_NAL, h264NalTypes, onlyParameterSets, rtpHeader, rtpPayload, startsKeyFrame } from "../media/index.ts";
import { CamfleetError } from "../subjects/index.ts";

const OFFER = [
  "v=0",
  "o=- 1 1 IN IP4 127.0.0.1",
  "s=-",
  "t=0 0",
  "a=fingerprint:sha-256 AB:CD",
  "a=ice-ufrag:abcd",
  "a=ice-pwd:0123456789abcdef012345",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111",
  "a=recvonly",
  "a=rtpmap:111 opus/48000/2",
  "m=video 9 UDP/TLS/RTP/SAVPF 96 102",
  "a=recvonly",
  "a=rtpmap:96 VP8/90000",
  "a=rtpmap:102 H264/90000",
  "",
].join("\r\n");

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CamfleetError ? err.code : "not a CamfleetError";
  }
  return undefined;
}

describe("checkOffer", () => {
  it("accepts a WHEP offer with H.264 among other codecs, and names its payload types", () => {
    expect(checkOffer(OFFER, "receive")).toEqual({ h264PayloadTypes: [102] });
  });
  it.each([
    ["no v=0", OFFER.replace("v=0", "v=1"), "INVALID_ARGUMENT"],
    ["a line that is not type=value", OFFER.replace("s=-", "garbage"), "INVALID_ARGUMENT"],
    ["no media", OFFER.split("m=audio")[0]!, "INVALID_ARGUMENT"],
    ["no ICE credentials", OFFER.replace("a=ice-ufrag:abcd\r\n", ""), "INVALID_ARGUMENT"],
    ["no ICE password", OFFER.replace(/a=ice-pwd:.*\r\n/, ""), "INVALID_ARGUMENT"],
    ["audio only", OFFER.split("m=video")[0]!, "UNSUPPORTED_MEDIA"],
    ["no H.264", OFFER.replace("H264/90000", "AV1/90000"), "UNSUPPORTED_MEDIA"],
  ])("refuses %s", (_what, sdp, code) => {
    expect(codeOf(() => checkOffer(sdp, "receive"))).toBe(code);
  });
  it("refuses a WHIP offer that only receives, and a WHEP offer that only sends", () => {
    expect(codeOf(() => checkOffer(OFFER, "send"))).toBe("UNSUPPORTED_MEDIA");
    expect(codeOf(() => checkOffer(OFFER.replaceAll("a=recvonly", "a=sendonly"), "receive"))).toBe("UNSUPPORTED_MEDIA");
  });
});

/** An RTP packet (payload type 96) with this timestamp and payload. */
function rtp(ts: number, payload: number[]): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  b[0] = 0x80;
  b[1] = 96;
  b.writeUInt32BE(ts, 4);
  Buffer.from(payload).copy(b, 12);
  return b;
}
const stapSpsPps = (ts: number) => rtp(ts, [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]);
const idrStart = (ts: number) => rtp(ts, [0x7c, 0x85, 1, 2, 3]);
const idrEnd = (ts: number) => rtp(ts, [0x7c, 0x45, 4, 5]);
const pFrame = (ts: number) => rtp(ts, [0x41, 9, 9]);

describe("GopCache", () => {
  it("keeps nothing until an IDR, then the IDR with the SPS/PPS of its timestamp and everything after", () => {
    const gop = new GopCache();
    gop.push(pFrame(100));
    gop.push(stapSpsPps(200)); // parameter sets before a P-frame start nothing
    gop.push(pFrame(200));
    expect(gop.packets()).toEqual([]);
    gop.push(stapSpsPps(300));
    gop.push(idrStart(300));
    gop.push(idrEnd(300));
    gop.push(pFrame(400));
    expect(gop.packets().map((p) => h264NalTypes(rtpPayload(p)!))).toEqual([[H264_NAL.SPS, H264_NAL.PPS], [H264_NAL.IDR], [], [H264_NAL.SLICE]]);
    // The next IDR replaces the GOP.
    gop.push(idrStart(500));
    expect(gop.packets()).toHaveLength(1);
  });
  it("keeps FFmpeg's STAP-A of AUD, SPS and PPS before an IDR (regression: a GOP without parameter sets could not be decoded)", () => {
    const gop = new GopCache();
    const audSpsPps = rtp(300, [24, 0, 2, 0x09, 0xf0, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]);
    const audAndSlice = rtp(400, [24, 0, 2, 0x09, 0xf0, 0, 3, 0x41, 9, 9]);
    expect(onlyParameterSets(rtpPayload(audSpsPps)!)).toBe(true);
    expect(onlyParameterSets(rtpPayload(audAndSlice)!)).toBe(false);
    expect(onlyParameterSets(rtpPayload(rtp(1, [0x09, 0xf0]))!)).toBe(false); // an AUD alone carries no parameters
    gop.push(audSpsPps);
    gop.push(idrStart(300));
    gop.push(audAndSlice);
    expect(gop.packets().map((p) => h264NalTypes(rtpPayload(p)!))).toEqual([[H264_NAL.AUD, H264_NAL.SPS, H264_NAL.PPS], [H264_NAL.IDR], [H264_NAL.AUD, H264_NAL.SLICE]]);
  });
  it("in copy mode keeps copies in its own buffer, across growth and GOPs, with the same bytes", () => {
    const gop = new GopCache(4 * 1024 * 1024, { copy: true });
    const sps = stapSpsPps(100);
    const idr = idrStart(100);
    gop.push(sps);
    gop.push(idr);
    // 300 packets of 1200 bytes: past the first 256 KB buffer.
    const ps = Array.from({ length: 300 }, (_, i) => rtp(200 + i, [0x41, i & 0xff, ...Array.from({ length: 1186 }, () => i & 0x7f)]));
    for (const p of ps) gop.push(p);
    const kept = gop.packets();
    expect(kept.map((p) => p.toString("hex"))).toEqual([sps, idr, ...ps].map((p) => p.toString("hex")));
    expect(kept.some((p, i) => p === [sps, idr, ...ps][i])).toBe(false);
    idr[idr.length - 1] = 0xee; // the source's buffer changes afterwards: the copy does not
    expect(gop.packets()[1]![idr.length - 1]).toBe(3);
    // The next GOP starts over in the same buffer, parameter sets included.
    gop.push(stapSpsPps(9000));
    gop.push(idrStart(9000));
    gop.push(pFrame(9001));
    expect(gop.packets().map((p) => p.toString("hex"))).toEqual([stapSpsPps(9000), idrStart(9000), pFrame(9001)].map((p) => p.toString("hex")));
  });
  it("drops a GOP past its size limit until the next IDR, and ignores what is not RTP", () => {
    const gop = new GopCache(40);
    gop.push(Buffer.from([1, 2, 3]));
    gop.push(idrStart(1));
    gop.push(pFrame(2));
    gop.push(pFrame(3));
    expect(gop.packets()).toEqual([]);
    gop.push(pFrame(4));
    expect(gop.packets()).toEqual([]);
    gop.push(idrStart(5));
    expect(gop.packets()).toHaveLength(1);
  });
});

describe("GopCache as the relay uses it", () => {
  it("push says which packet starts a GOP: the IDR's first packet only, not its parameter sets or its other fragments", () => {
    const gop = new GopCache();
    expect([stapSpsPps(300), idrStart(300), idrEnd(300), pFrame(400), stapSpsPps(500), idrStart(500)].map((p) => gop.push(p))).toEqual([
      false,
      true,
      false,
      false,
      false,
      true,
    ]);
    // An IDR without parameter sets of its own timestamp starts a GOP of its own.
    expect(gop.push(idrStart(600))).toBe(true);
    expect(gop.size).toBe(1);
  });
  it("clear() forgets the parameter sets too: a new publisher's IDR does not start with the old one's SPS/PPS", () => {
    const gop = new GopCache();
    gop.push(stapSpsPps(700));
    gop.clear();
    expect(gop.push(idrStart(700))).toBe(true);
    expect(gop.packets().map((p) => h264NalTypes(rtpPayload(p)!))).toEqual([[H264_NAL.IDR]]);
  });
});

describe("H.264 and RTP readers", () => {
  it("name the NAL units of single, aggregated (STAP-A) and fragmented (FU-A) payloads", () => {
    expect(h264NalTypes(rtpPayload(stapSpsPps(1))!)).toEqual([H264_NAL.SPS, H264_NAL.PPS]);
    expect(h264NalTypes(rtpPayload(idrStart(1))!)).toEqual([H264_NAL.IDR]);
    expect(h264NalTypes(rtpPayload(idrEnd(1))!)).toEqual([]); // an FU-A continuation starts nothing
    expect(startsKeyFrame(rtpPayload(idrStart(1))!)).toBe(true);
    expect(startsKeyFrame(rtpPayload(pFrame(1))!)).toBe(false);
    expect(onlyParameterSets(rtpPayload(stapSpsPps(1))!)).toBe(true);
    expect(onlyParameterSets(rtpPayload(idrStart(1))!)).toBe(false);
  });
  it("read the header past CSRCs and an extension, and the payload without padding", () => {
    const p = rtp(0x01020304, [0x65, 1, 2]);
    expect(rtpHeader(p)).toEqual({ marker: false, payloadType: 96, sequenceNumber: 0, timestamp: 0x01020304, ssrc: 0 });
    // One CSRC, a one-word extension, two bytes of padding.
    const fancy = Buffer.concat([Buffer.from([0x80 | 0x20 | 0x10 | 1, 0x80 | 96]), Buffer.alloc(10), Buffer.alloc(4), Buffer.from([0xbe, 0xde, 0, 1]), Buffer.alloc(4), Buffer.from([0x65, 7, 0, 2])]);
    expect(rtpHeader(fancy)).toMatchObject({ marker: true, payloadType: 96 });
    expect([...rtpPayload(fancy)!]).toEqual([0x65, 7]);
    expect(rtpHeader(Buffer.from([0x40, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeUndefined(); // version 1
    expect(rtpPayload(Buffer.from([0x80, 96]))).toBeUndefined();
  });
});
