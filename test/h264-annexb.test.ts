// RTP → Annex-B depacketizing (media/h264-annexb.ts) on hand-built packets:
// single NAL units, STAP-A, FU-A, lost fragments, and the cut at the last
// complete access unit. The real-camera path is in test/snapshot.test.ts.

import { describe, expect, it } from "vitest";
import { rtpToAnnexB } from "../media/index.ts";

const SC = [0, 0, 0, 1];

function rtp(seq: number, ts: number, payload: number[], marker = false): Buffer {
  const header = Buffer.alloc(12);
  header[0] = 0x80;
  header[1] = (marker ? 0x80 : 0) | 96;
  header.writeUInt16BE(seq & 0xffff, 2);
  header.writeUInt32BE(ts >>> 0, 4);
  header.writeUInt32BE(0x1234, 8);
  return Buffer.concat([header, Buffer.from(payload)]);
}

/** An STAP-A payload (type 24) aggregating `nals`. */
function stapA(nals: number[][]): number[] {
  const out = [0x78];
  for (const n of nals) out.push(n.length >> 8, n.length & 0xff, ...n);
  return out;
}

/** FU-A fragments (type 28) of one NAL unit, split into pieces of `size` bytes of its body. */
function fuA(nal: number[], size: number): number[][] {
  const [header, ...body] = nal;
  const pieces: number[][] = [];
  for (let i = 0; i < body.length; i += size) {
    const start = i === 0 ? 0x80 : 0;
    const end = i + size >= body.length ? 0x40 : 0;
    pieces.push([(header! & 0xe0) | 28, start | end | (header! & 0x1f), ...body.slice(i, i + size)]);
  }
  return pieces;
}

const SPS = [0x67, 0x42, 0xc0, 0x1e];
const PPS = [0x68, 0xce, 0x3c, 0x80];
const IDR = [0x65, ...Array.from({ length: 10 }, (_, i) => i + 1)];
const P1 = [0x41, 0x9a, 0x01, 0x02];
const P2 = [0x41, 0x9a, 0x03, 0x04];

describe("rtpToAnnexB", () => {
  it("rebuilds single NAL units, STAP-A and FU-A into start-coded units and counts frames", () => {
    const idr = fuA(IDR, 4);
    const packets = [
      rtp(1, 1000, stapA([SPS, PPS])),
      ...idr.map((p, i) => rtp(2 + i, 1000, p, i === idr.length - 1)),
      rtp(10, 4000, P1, true),
      rtp(11, 7000, P2, true),
    ];
    const { data, frames } = rtpToAnnexB(packets);
    expect(frames).toBe(3);
    expect([...data]).toEqual([...SC, ...SPS, ...SC, ...PPS, ...SC, ...IDR, ...SC, ...P1, ...SC, ...P2]);
  });

  it("leaves out a frame whose packets are still arriving (no marker yet)", () => {
    const p2 = fuA([0x41, 1, 2, 3, 4, 5, 6], 3);
    const packets = [rtp(1, 1000, IDR, true), rtp(2, 4000, P1, true), rtp(3, 7000, p2[0]!)];
    const { data, frames } = rtpToAnnexB(packets);
    expect(frames).toBe(2);
    expect([...data]).toEqual([...SC, ...IDR, ...SC, ...P1]);
  });

  it("drops a fragmented unit that lost a fragment instead of handing it over cut short", () => {
    const frag = fuA(IDR, 3); // 4 fragments
    const packets = [rtp(1, 1000, frag[0]!), rtp(2, 1000, frag[1]!), /* seq 3 lost */ rtp(4, 1000, frag[3]!, true), rtp(5, 4000, P1, true)];
    const { data, frames } = rtpToAnnexB(packets);
    expect([...data]).toEqual([...SC, ...P1]);
    expect(frames).toBe(1);
  });

  it("follows sequence numbers across the 16-bit wrap", () => {
    const frag = fuA(IDR, 5);
    const packets = frag.map((p, i) => rtp(0xffff + i, 90_000, p, i === frag.length - 1));
    expect([...rtpToAnnexB(packets).data]).toEqual([...SC, ...IDR]);
  });

  it("gives nothing for no packets, parameter sets alone, or packets that are not RTP", () => {
    expect(rtpToAnnexB([])).toEqual({ data: Buffer.alloc(0), frames: 0 });
    expect(rtpToAnnexB([rtp(1, 1, stapA([SPS, PPS]), true)]).frames).toBe(0);
    expect(rtpToAnnexB([Buffer.from([1, 2, 3]), Buffer.alloc(20)]).frames).toBe(0);
  });

  it("keeps the whole units of a malformed STAP-A and skips modes camfleet never receives", () => {
    const bad = [0x78, 0, SPS.length, ...SPS, 0, 50, 0x68]; // second size runs past the payload
    const { data } = rtpToAnnexB([rtp(1, 1, bad), rtp(2, 1, [0x79, 0, 0]) /* STAP-B */, rtp(3, 1, IDR, true)]);
    expect([...data]).toEqual([...SC, ...SPS, ...SC, ...IDR]);
  });
});
