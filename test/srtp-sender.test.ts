// The lean RTP send path (media/srtp-sender.ts): its packet protection
// checked by werift's own SRTP implementation for both profiles, then the
// whole path between two real werift peers on 127.0.0.1 (ICE, DTLS-SRTP),
// with sequence wrap, a new source, NACK and sender reports.

import { randomBytes } from "node:crypto";
import type { Socket } from "node:dgram";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  GenericNack,
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RTCPeerConnection,
  RtcpSrPacket,
  RtcpTransportLayerFeedback,
  SrtpSession,
  type RtpPacket,
} from "werift";
import { h264PeerConfig, keepLoopbackCandidates } from "../media/index.ts";
import { ntpFromUnixMs, openSrtpSender, rtpProtector } from "../media/srtp-sender.ts";
import { waitFor } from "./helpers/wait.ts";

/** A serialized RTP packet: V=2, payload type 96, marker off, and `payload`. */
function rtp(seq: number, ts: number, ssrc: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(12);
  header[0] = 0x80;
  header[1] = 96;
  header.writeUInt16BE(seq & 0xffff, 2);
  header.writeUInt32BE(ts >>> 0, 4);
  header.writeUInt32BE(ssrc >>> 0, 8);
  return Buffer.concat([header, payload]);
}

/** Both ends of one SRTP direction: werift's sender context (whose keys our protector uses) and a receiver. */
function srtpPair(profile: number) {
  const key = randomBytes(16);
  const salt = randomBytes(profile === ProtectionProfileAeadAes128Gcm ? 12 : 14);
  const other = { key: randomBytes(16), salt: randomBytes(salt.length) };
  const sending = new SrtpSession({
    profile,
    keys: { localMasterKey: key, localMasterSalt: salt, remoteMasterKey: other.key, remoteMasterSalt: other.salt },
  });
  const receiving = new SrtpSession({
    profile,
    keys: { localMasterKey: other.key, localMasterSalt: other.salt, remoteMasterKey: key, remoteMasterSalt: salt },
  });
  return { sending, receiving };
}

describe("SRTP protection, checked by werift's decryption", () => {
  for (const [name, profile] of [
    ["AEAD_AES_128_GCM", ProtectionProfileAeadAes128Gcm],
    ["AES_CM_128_HMAC_SHA1_80", ProtectionProfileAes128CmHmacSha1_80],
  ] as const) {
    it(`${name}: every packet authenticates and decrypts, across a sequence-number wrap`, () => {
      const { sending, receiving } = srtpPair(profile);
      const protect = rtpProtector(sending.localContext)!;
      expect(protect.name).toBe(name);
      const ssrc = 0x1234abcd;
      let roc = 0;
      for (let i = 0; i < 200; i++) {
        const seq = (65_500 + i) & 0xffff;
        if (seq === 0) roc++;
        const payload = randomBytes(100 + i);
        const plain = rtp(seq, 9000 * i, ssrc, payload);
        const header = plain.subarray(0, 12);
        const parts = protect.rtp(header, plain.subarray(12), ssrc, seq, roc);
        expect(parts[0]).toBe(header);
        const protectedPacket = Buffer.concat(parts);
        expect(protectedPacket.length).toBe(plain.length + (name === "AEAD_AES_128_GCM" ? 16 : 10));
        // The payload really is encrypted.
        expect(protectedPacket.subarray(12, 12 + payload.length).equals(payload)).toBe(false);
        expect(receiving.decrypt(protectedPacket).equals(plain)).toBe(true);
      }
      expect(roc).toBe(1);
    });

    it(`${name}: a packet protected with the wrong rollover counter is refused`, () => {
      const { sending, receiving } = srtpPair(profile);
      const protect = rtpProtector(sending.localContext)!;
      const plain = rtp(10, 0, 42, randomBytes(50));
      expect(() => receiving.decrypt(Buffer.concat(protect.rtp(plain.subarray(0, 12), plain.subarray(12), 42, 10, 1)))).toThrow();
    });
  }

  it("an unknown profile is not handled (the caller keeps werift's path)", () => {
    const keys = { profile: 0x0002, srtpSessionKey: randomBytes(16), srtpSessionSalt: randomBytes(14), srtpSessionAuthTag: randomBytes(20) };
    expect(rtpProtector(keys)).toBeUndefined();
  });

  it("NTP timestamps: seconds since 1900 in the high word, the fraction in the low one", () => {
    const ntp = ntpFromUnixMs(1_000_500); // 1000.5 s after 1970
    expect(Number(ntp >> 32n)).toBe(1000 + 2_208_988_800);
    expect(Number(ntp & 0xffff_ffffn)).toBe(0x8000_0000);
  });
});

// ---------------------------------------------------------------------------

interface Received {
  packets: RtpPacket[];
  reports: RtcpSrPacket[];
}

/** A werift publisher and a werift receiver connected over 127.0.0.1 (in-process offer/answer). */
async function connectedPair() {
  const publisher = new RTCPeerConnection(h264PeerConfig({ loopbackOnly: true }));
  const receiver = new RTCPeerConnection(h264PeerConfig({ loopbackOnly: true }));
  onTestFinished(async () => {
    await Promise.all([publisher.close(), receiver.close()]);
  });
  const transceiver = publisher.addTransceiver("video", { direction: "sendonly" });
  const received: Received = { packets: [], reports: [] };
  receiver.onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((packet) => received.packets.push(packet.clone()));
  });
  await publisher.setLocalDescription(await publisher.createOffer());
  await receiver.setRemoteDescription({ type: "offer", sdp: keepLoopbackCandidates(publisher.localDescription!.sdp) });
  await receiver.setLocalDescription(await receiver.createAnswer());
  await publisher.setRemoteDescription({ type: "answer", sdp: keepLoopbackCandidates(receiver.localDescription!.sdp) });
  await waitFor(() => publisher.connectionState === "connected" && receiver.connectionState === "connected", {
    timeoutMs: 10_000,
    message: "werift peers connected",
  });
  const rtpReceiver = receiver.getTransceivers()[0]!.receiver;
  rtpReceiver.onRtcp.subscribe((packet) => {
    if (packet instanceof RtcpSrPacket) received.reports.push(packet);
  });
  return { publisher, receiver, sender: transceiver.sender, rtpReceiver, received };
}

describe("the lean sender between two werift peers", () => {
  it("delivers packets with the negotiated SSRC and payload type, continuous across a wrap and a new source", async () => {
    const { publisher, sender, received } = await connectedPair();
    const fast = openSrtpSender(sender, publisher.localDescription!.sdp, { senderReportMs: 200 })!;
    expect(fast).toBeDefined();
    onTestFinished(() => fast.close());
    const negotiatedPt = sender.codec!.payloadType;

    // Source A crosses the 16-bit wrap; source B (a restarted FFmpeg) starts elsewhere.
    const payloads: Buffer[] = [];
    const send = (seq: number, ts: number, ssrc: number) => {
      const payload = randomBytes(200);
      payloads.push(payload);
      fast.send(rtp(seq, ts, ssrc, payload));
    };
    for (let i = 0; i < 100; i++) send(65_480 + i, 1_000_000 + i * 3000, 0xaaaa);
    for (let i = 0; i < 50; i++) send(7 + i, 5_000 + i * 3000, 0xbbbb);
    await waitFor(() => received.packets.length >= 150, { timeoutMs: 5_000, message: `150 packets received (got ${received.packets.length})` });

    const got = received.packets.slice(0, 150);
    expect(got.every((p) => p.header.ssrc === sender.ssrc && p.header.payloadType === negotiatedPt)).toBe(true);
    expect(got.map((p) => p.payload.equals(payloads[got.indexOf(p)]!))).not.toContain(false);
    // One step per packet, through the wrap and through the change of source.
    for (let i = 1; i < got.length; i++) expect((got[i]!.header.sequenceNumber - got[i - 1]!.header.sequenceNumber) & 0xffff).toBe(1);
    // Timestamps keep moving forward over the change of source: the next one is one 30 fps frame on.
    expect((got[100]!.header.timestamp - got[99]!.header.timestamp) >>> 0).toBe(3000);
    // All of them straight on the nominated pair's socket (a loopback host pair), none through werift's connection.send.
    expect(fast.stats()).toMatchObject({ packetsSent: 150, direct: 150, rebased: 1, dropped: 0 });

    // Sender reports: our SSRC, the packets sent so far.
    await waitFor(() => received.reports.some((r) => r.ssrc === sender.ssrc && r.senderInfo.packetCount === 150), {
      timeoutMs: 3_000,
      message: "a sender report counting 150 packets",
    });
    const report = received.reports.at(-1)!;
    const wallS = Number(report.senderInfo.ntpTimestamp >> 32n) - 2_208_988_800;
    expect(Math.abs(wallS - Date.now() / 1000)).toBeLessThan(5);
  });

  it("answers a NACK from its history, and drops what is not RTP", async () => {
    const { publisher, sender, rtpReceiver, received } = await connectedPair();
    const fast = openSrtpSender(sender, publisher.localDescription!.sdp)!;
    onTestFinished(() => fast.close());
    for (let i = 0; i < 20; i++) fast.send(rtp(100 + i, i * 3000, 0xcccc, randomBytes(300)));
    fast.send(Buffer.from("not rtp at all"));
    fast.send(rtp(200, 0, 0xcccc, Buffer.alloc(0))); // no payload
    await waitFor(() => received.packets.length >= 20, { timeoutMs: 5_000, message: "20 packets received" });
    expect(fast.stats().dropped).toBe(2);

    const wanted = received.packets[5]!.header.sequenceNumber;
    const nack = new GenericNack({ senderSsrc: 1, mediaSourceSsrc: sender.ssrc, lost: [wanted] });
    await rtpReceiver.dtlsTransport.sendRtcp([new RtcpTransportLayerFeedback({ feedback: nack })]);
    await waitFor(() => fast.stats().retransmitted === 1, { timeoutMs: 3_000, message: "NACKed packet resent" });
    expect(fast.stats().direct).toBe(21);
    await waitFor(() => received.packets.filter((p) => p.header.sequenceNumber === wanted).length === 2, {
      timeoutMs: 3_000,
      message: "the resent packet arrives (a second copy)",
    });
  });

  /** A connected pair whose lean sender has delivered one packet of source `ssrc`. */
  async function flowingPair(ssrc: number) {
    const pair = await connectedPair();
    const fast = openSrtpSender(pair.sender, pair.publisher.localDescription!.sdp)!;
    onTestFinished(() => fast.close());
    fast.send(rtp(1, 0, ssrc, randomBytes(100)));
    await waitFor(() => pair.received.packets.length >= 1, { timeoutMs: 5_000, message: "the first packet arrives" });
    return { ...pair, fast };
  }

  it("stays quiet once the peer connection is closed: no throw, nothing sent on the closed socket", async () => {
    const { publisher, fast } = await flowingPair(0xdddd);
    await publisher.close();
    for (let i = 2; i < 10; i++) expect(() => fast.send(rtp(i, i * 3000, 0xdddd, randomBytes(100)))).not.toThrow();
    expect(fast.stats().direct).toBe(1);
  });

  it("falls back to werift's path if the pair's socket is closed under it", async () => {
    const { sender, fast } = await flowingPair(0xeeee);
    // werift's own objects: the socket of the nominated pair, closed without werift knowing.
    const pair = sender.dtlsTransport.iceTransport.connection.nominated as unknown as { protocol: { transport: { socket: Socket } } };
    const socket = pair.protocol.transport.socket;
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    for (let i = 2; i < 10; i++) expect(() => fast.send(rtp(i, i * 3000, 0xeeee, randomBytes(100)))).not.toThrow();
    expect(fast.stats()).toMatchObject({ packetsSent: 9, direct: 1 });
  });

  it("refuses a session that is not connected yet (the publisher then uses werift's path)", async () => {
    const publisher = new RTCPeerConnection(h264PeerConfig({ loopbackOnly: true }));
    onTestFinished(() => publisher.close());
    const transceiver = publisher.addTransceiver("video", { direction: "sendonly" });
    await publisher.setLocalDescription(await publisher.createOffer());
    expect(openSrtpSender(transceiver.sender, publisher.localDescription!.sdp)).toBeUndefined();
  });
});
