import { createCipheriv, createHmac, createSecretKey, type KeyObject } from "node:crypto";
import { Socket } from "node:dgram";
import { isIP } from "node:net";
import {
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RtcpSenderInfo,
  RtcpSrPacket,
  type RTCRtpSender,
} from "werift";
import { rtpHeaderLength } from "./rtp.ts";

/**
 * A lean send path for RTP that is already packetized (FFmpeg's `-f rtp`),
 * next to werift's RTCRtpSender.
 *
 * Why: werift 0.25's `sender.sendRtp` costs ~50 µs of CPU per packet (it
 * parses the packet into objects, rebuilds header extensions, computes an NTP
 * time through strings and BigInt, serializes, concatenates, and awaits five
 * promises). At 250 packets/s per 720p camera that alone was 1.1 % of a core,
 * the whole of camfleet's cost above a bare FFmpeg. This path does per packet
 * only what SRTP requires: a header rewrite on a copy, one AES operation, one
 * UDP send (~15 µs, see bench/camera.ts and bench/README.md). The send goes
 * straight to the socket of the ICE pair werift nominated, as header,
 * ciphertext and tag in one sendmsg: werift's `connection.send` reaches the
 * same socket through three async functions (four promises a packet), and the
 * young generation's churn is what a node's memory and GC time follow.
 *
 * werift still does everything else: ICE, DTLS, the SRTP key derivation (the
 * session keys are read from its context), RTCP reception (PLI, NACK), and
 * SRTCP for the sender reports this path sends.
 *
 * What it does per packet (RFC 3550, RFC 3711, RFC 7714):
 * - SSRC and payload type become the negotiated ones;
 * - sequence numbers and timestamps stay the source's, except that a new
 *   source (another SSRC, or a jump of more than MAX_SEQ_JUMP) is rebased so
 *   the outgoing stream stays continuous: a restarted FFmpeg is invisible to
 *   the receiver's jitter buffer and SRTP replay window;
 * - the rollover counter follows the outgoing sequence numbers;
 * - AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80, whichever DTLS negotiated.
 *
 * NACKed packets are resent from a history of the last HISTORY packets, as
 * SRTP bytes (a lost packet was never seen by the receiver's replay window);
 * the history is a 192 KB slab per session.
 * A sender report goes out every `senderReportMs`.
 *
 * Not handled (`openSrtpSender` returns undefined and the caller uses werift's
 * own path): a session with negotiated RTP header extensions, or an SRTP
 * profile other than the two above.
 */

/** Packets kept for NACK; werift's sender keeps the same number. */
const HISTORY = 128;
/** Bytes per history slot: a packet that does not fit (larger than an Ethernet MTU) is not kept. */
const HISTORY_SLOT = 1500;
/** A forward jump larger than this (or any backward one beyond reordering) is a new source. */
const MAX_SEQ_JUMP = 3000;
/** How far back a packet may arrive and still count as reordering (and not a new source). */
const MAX_REORDER = 100;
/** Seconds between 1900 (NTP's epoch) and 1970. */
const NTP_EPOCH_OFFSET_S = 2_208_988_800;

export type SrtpProfileName = "AEAD_AES_128_GCM" | "AES_CM_128_HMAC_SHA1_80";

export interface SrtpSenderStats {
  packetsSent: number;
  bytesSent: number;
  retransmitted: number;
  /** Packets (retransmissions included) sent straight on the nominated pair's UDP socket; the rest went through werift's `connection.send`. */
  direct: number;
  /** Times the input was rebased onto the outgoing sequence (a new source). */
  rebased: number;
  /** Inputs that were not RTP. */
  dropped: number;
}

export interface SrtpSender {
  readonly profile: SrtpProfileName;
  /** Protects and sends one serialized RTP packet. The buffer is not modified. */
  send(packet: Buffer): void;
  stats(): SrtpSenderStats;
  /** Stops the sender reports and lets go of the history. Idempotent. */
  close(): void;
}

export interface SrtpSenderOptions {
  /** Interval of RTCP sender reports, ms. Default 1000. */
  senderReportMs?: number;
}

/**
 * A lean sender for `sender`, whose DTLS transport must be connected.
 * Undefined when the session is not one this path handles (see above); the
 * caller then keeps using `sender.sendRtp`.
 */
export function openSrtpSender(sender: RTCRtpSender, localSdp: string, options: SrtpSenderOptions = {}): SrtpSender | undefined {
  const dtls = sender.dtlsTransport;
  const codec = sender.codec;
  const context = dtls?.srtp?.localContext;
  if (dtls === undefined || codec === undefined || context === undefined || dtls.state !== "connected") return undefined;
  // With extensions negotiated, each packet would need them written (werift does); camfleet's offers have none.
  if (/^a=extmap:/m.test(localSdp)) return undefined;
  const protect = rtpProtector(context);
  if (protect === undefined) return undefined;

  const ssrc = sender.ssrc;
  const payloadType = codec.payloadType;
  const clockRate = codec.clockRate;
  const connection = dtls.iceTransport.connection;

  const stats: SrtpSenderStats = { packetsSent: 0, bytesSent: 0, retransmitted: 0, direct: 0, rebased: 0, dropped: 0 };
  let payloadOctets = 0;
  let closed = false;

  // Input → output mapping, and the outgoing stream's state.
  let inSsrc: number | undefined;
  let lastInSeq = 0;
  let seqOffset = 0;
  let tsOffset = 0;
  let lastOutSeq = 0;
  let lastOutTs = 0;
  /** Wall time (ms since 1970) when lastOutTs was sent, for sender reports. */
  let lastOutAtMs = 0;
  let roc = 0;

  // The history is one preallocated slab that packets are copied into, not the packets themselves:
  // keeping each packet alive for half a second made V8 pretenure Buffer allocations (every Buffer
  // of the process then went straight to the old generation: a mark-compact twice a second at 24
  // cameras, 30 % of the node's CPU).
  const historySeq = new Int32Array(HISTORY).fill(-1);
  const historyLength = new Uint16Array(HISTORY);
  let history: Buffer | undefined = Buffer.alloc(HISTORY * HISTORY_SLOT);

  const onSendError = () => {};
  let pair: unknown;
  let path: UdpPath | undefined;
  /** Sends one protected packet, given as its parts. */
  const transmit = (parts: Buffer[], length: number) => {
    const nominated = connection.nominated;
    if (nominated !== pair) {
      pair = nominated;
      path = udpPathOf(nominated);
    }
    if (path === undefined || path.transport.closed || connection.state === "closed" || connection.state === "failed") {
      connection.send(parts.length === 1 ? parts[0]! : Buffer.concat(parts, length)).catch(onSendError);
      return;
    }
    try {
      path.socket.send(parts, path.port, path.address);
    } catch {
      // The socket went away under werift (it throws once closed): werift's own path decides from here on.
      path = undefined;
      connection.send(Buffer.concat(parts, length)).catch(onSendError);
      return;
    }
    stats.direct++;
    path.pair.packetsSent++;
    path.pair.bytesSent += length;
  };

  const nack = sender.onGenericNack.subscribe((feedback) => {
    if (closed) return;
    for (const seq of feedback.lost) {
      const slot = seq % HISTORY;
      if (history === undefined || historySeq[slot] !== seq) continue;
      stats.retransmitted++;
      // A copy: the slot may be overwritten before the send completes.
      const length = historyLength[slot]!;
      transmit([Buffer.from(history.subarray(slot * HISTORY_SLOT, slot * HISTORY_SLOT + length))], length);
    }
  });

  const senderReport = setInterval(() => {
    if (closed || inSsrc === undefined || dtls.state !== "connected") return;
    const nowMs = performance.timeOrigin + performance.now();
    const rtpTimestamp = (lastOutTs + Math.round(((nowMs - lastOutAtMs) * clockRate) / 1000)) >>> 0;
    const report = new RtcpSrPacket({
      ssrc,
      senderInfo: new RtcpSenderInfo({
        ntpTimestamp: ntpFromUnixMs(nowMs),
        rtpTimestamp,
        packetCount: stats.packetsSent >>> 0,
        octetCount: payloadOctets >>> 0,
      }),
    });
    dtls.sendRtcp([report]).catch(onSendError);
  }, options.senderReportMs ?? 1000);
  senderReport.unref();

  return {
    profile: protect.name,
    send(packet: Buffer): void {
      if (closed) return;
      const headerLength = payloadOffset(packet);
      if (headerLength === undefined) {
        stats.dropped++;
        return;
      }
      const seq = packet.readUInt16BE(2);
      const ts = packet.readUInt32BE(4);
      const source = packet.readUInt32BE(8);

      const first = inSsrc === undefined;
      if (first || source !== inSsrc || isNewSource(seq, lastInSeq)) {
        if (!first) {
          // Continue the outgoing stream where it stands: next sequence number, one 30 fps frame later.
          seqOffset = (lastOutSeq + 1 - seq) & 0xffff;
          tsOffset = (lastOutTs + Math.round(clockRate / 30) - ts) >>> 0;
          stats.rebased++;
        }
        inSsrc = source;
        lastInSeq = seq;
      } else if (((seq - lastInSeq) & 0xffff) < 0x8000) {
        lastInSeq = seq;
      }

      const outSeq = (seq + seqOffset) & 0xffff;
      const outTs = (ts + tsOffset) >>> 0;
      let packetRoc = roc;
      if (first) {
        lastOutSeq = outSeq;
      } else {
        const forward = (outSeq - lastOutSeq) & 0xffff;
        if (forward !== 0 && forward < 0x8000) {
          if (outSeq < lastOutSeq) packetRoc = ++roc; // wrapped
          lastOutSeq = outSeq;
        } else if (outSeq > lastOutSeq) {
          packetRoc = roc - 1; // a late packet from before the last wrap
        }
      }
      if (outSeq === lastOutSeq) {
        lastOutTs = outTs;
        lastOutAtMs = performance.timeOrigin + performance.now();
      }

      const header = Buffer.allocUnsafe(headerLength);
      packet.copy(header, 0, 0, headerLength);
      header[1] = (header[1]! & 0x80) | payloadType;
      header.writeUInt16BE(outSeq, 2);
      header.writeUInt32BE(outTs, 4);
      header.writeUInt32BE(ssrc, 8);

      const payload = packet.subarray(headerLength);
      const parts = protect.rtp(header, payload, ssrc, outSeq, packetRoc >>> 0);
      const length = header.length + parts[1].length + parts[2].length;
      const slot = outSeq % HISTORY;
      if (length <= HISTORY_SLOT && history !== undefined) {
        let at = slot * HISTORY_SLOT;
        for (const part of parts) at += part.copy(history, at);
        historyLength[slot] = length;
        historySeq[slot] = outSeq;
      } else {
        historySeq[slot] = -1;
      }
      stats.packetsSent++;
      stats.bytesSent += length;
      payloadOctets += payload.length;
      transmit(parts, length);
    },
    stats: () => ({ ...stats }),
    close(): void {
      if (closed) return;
      closed = true;
      clearInterval(senderReport);
      nack.unSubscribe();
      history = undefined;
    },
  };
}

interface UdpPath {
  pair: { packetsSent: number; bytesSent: number };
  transport: { closed: boolean };
  socket: Socket;
  address: string;
  port: number;
}

/**
 * The UDP socket and remote address of a werift ICE candidate pair, for a
 * plain host/srflx pair (werift's StunProtocol over its UdpTransport, whose
 * send is this same `socket.send`); undefined for anything else (TURN, TCP, no
 * pair yet), which keeps going through `connection.send`.
 */
function udpPathOf(nominated: unknown): UdpPath | undefined {
  const pair = nominated as
    | { packetsSent?: unknown; bytesSent?: unknown; remoteAddr?: unknown; protocol?: { type?: unknown; transport?: { type?: unknown; closed?: unknown; socket?: unknown } } }
    | undefined;
  const transport = pair?.protocol?.transport;
  const remote = pair?.remoteAddr;
  if (pair?.protocol?.type !== "stun" || transport?.type !== "udp" || !(transport.socket instanceof Socket)) return undefined;
  if (typeof pair.packetsSent !== "number" || typeof pair.bytesSent !== "number" || typeof transport.closed !== "boolean") return undefined;
  if (!Array.isArray(remote) || typeof remote[0] !== "string" || isIP(remote[0]) === 0 || typeof remote[1] !== "number") return undefined;
  return {
    pair: pair as UdpPath["pair"],
    transport: transport as UdpPath["transport"],
    socket: transport.socket,
    address: remote[0],
    port: remote[1],
  };
}

/** Where the payload of an RTP packet with a payload starts; undefined for anything else, RTCP included. */
function payloadOffset(packet: Buffer): number | undefined {
  const pt = (packet[1] ?? 0) & 0x7f;
  if (pt >= 72 && pt <= 76) return undefined; // RTCP on the same port (RFC 5761 §4)
  const length = rtpHeaderLength(packet);
  return length !== undefined && length < packet.length ? length : undefined;
}

function isNewSource(seq: number, lastSeq: number): boolean {
  const forward = (seq - lastSeq) & 0xffff;
  return forward > MAX_SEQ_JUMP && forward < 0x10000 - MAX_REORDER;
}

/** The 64-bit NTP timestamp (RFC 3550 §4) of a Unix time in ms. */
export function ntpFromUnixMs(unixMs: number): bigint {
  const seconds = Math.floor(unixMs / 1000);
  const fraction = Math.floor(((unixMs - seconds * 1000) / 1000) * 0x1_0000_0000);
  return (BigInt(seconds + NTP_EPOCH_OFFSET_S) << 32n) | BigInt(fraction);
}

export interface RtpProtector {
  name: SrtpProfileName;
  /**
   * One packet's parts: [header, encrypted payload, tag], sent in that order.
   * `header` is already the outgoing one and is returned as is.
   */
  rtp(header: Buffer, payload: Buffer, ssrc: number, seq: number, roc: number): [Buffer, Buffer, Buffer];
}

/** The SRTP session keys of one direction, as werift's SRTP context derives them (RFC 3711 §4.3). */
export interface SrtpSessionKeys {
  profile: number;
  srtpSessionKey: Buffer;
  srtpSessionSalt: Buffer;
  srtpSessionAuthTag: Buffer;
}

/** Packet protection for `keys.profile`; undefined for a profile this path does not implement. */
export function rtpProtector(keys: SrtpSessionKeys): RtpProtector | undefined {
  const { profile, srtpSessionSalt: sessionSalt, srtpSessionAuthTag: authKey } = keys;
  const key: KeyObject = createSecretKey(keys.srtpSessionKey);
  if (profile === ProtectionProfileAeadAes128Gcm) {
    // RFC 7714 §8: IV = (0x0000 || SSRC || ROC || SEQ) XOR the 12-byte session salt; AAD = the header.
    const salt = sessionSalt.subarray(0, 12);
    const iv = Buffer.alloc(12); // createCipheriv copies it
    return {
      name: "AEAD_AES_128_GCM",
      rtp(header, payload, ssrc, seq, roc) {
        iv.writeUInt16BE(0, 0);
        iv.writeUInt32BE(ssrc, 2);
        iv.writeUInt32BE(roc, 6);
        iv.writeUInt16BE(seq, 10);
        for (let i = 0; i < 12; i++) iv[i]! ^= salt[i]!;
        const cipher = createCipheriv("aes-128-gcm", key, iv);
        cipher.setAAD(header);
        const encrypted = cipher.update(payload);
        cipher.final();
        return [header, encrypted, cipher.getAuthTag()];
      },
    };
  }
  if (profile === ProtectionProfileAes128CmHmacSha1_80) {
    // RFC 3711 §4.1.1: IV = (salt · 2^16) XOR (SSRC · 2^64) XOR (index · 2^16); tag = HMAC-SHA1(header || payload || ROC), 80 bits.
    const salt = sessionSalt.subarray(0, 14);
    const iv = Buffer.alloc(16); // createCipheriv copies it
    const rocBytes = Buffer.alloc(4);
    return {
      name: "AES_CM_128_HMAC_SHA1_80",
      rtp(header, payload, ssrc, seq, roc) {
        iv.fill(0);
        iv.writeUInt32BE(ssrc, 4);
        iv.writeUInt32BE(roc, 8);
        iv.writeUInt16BE(seq, 12);
        for (let i = 0; i < 14; i++) iv[i]! ^= salt[i]!;
        const encrypted = createCipheriv("aes-128-ctr", key, iv).update(payload);
        rocBytes.writeUInt32BE(roc, 0);
        const tag = createHmac("sha1", authKey).update(header).update(encrypted).update(rocBytes).digest().subarray(0, 10);
        return [header, encrypted, tag];
      },
    };
  }
  return undefined;
}
