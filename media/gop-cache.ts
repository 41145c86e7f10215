import { h264NalTypes, typesAreParameterSets, typesStartKeyFrame } from "./h264.ts";
import { rtpPayload } from "./rtp.ts";

export interface GopCacheOptions {
  /**
   * Copy each packet into a buffer the cache owns (grown as needed, reused
   * for every GOP) instead of keeping the packet itself. Keeping thousands of
   * packets alive for a GOP makes V8 pretenure Buffer allocations (see
   * srtp-sender.ts): every Buffer of the process then goes straight to the
   * old generation. The price: what packets() returns is valid only until
   * the next push() — read it at once. Default false.
   */
  copy?: boolean;
}

/** First size of a copying cache's buffer; it doubles up to maxBytes, bytes. */
const FIRST_SLAB_BYTES = 256 * 1024;

/**
 * The RTP of the source's current GOP, from its last IDR (with the SPS/PPS
 * sent just before it, same timestamp) on, as serialized packets. A decoder
 * can start only at an IDR, and copied H.264 cannot make one on request, so
 * whoever starts late replays this instead of waiting for the source's next
 * IDR: the camera keeps it always (a WHIP session that starts begins with
 * it, a snapshot decodes it), the relay keeps one per camera (a viewer that
 * comes up begins with it).
 */
export class GopCache {
  #gop: Buffer[] = [];
  #bytes = 0;
  #gopTs?: number;
  /** The latest packets that carry only parameter sets (SPS/PPS/SEI), and their timestamp. */
  #params: Buffer[] = [];
  #paramsTs?: number;
  readonly #copy: boolean;
  /** Copy mode: the buffer packets are copied into, and how much of it this GOP uses. */
  #slab?: Buffer;
  #slabUsed = 0;

  /** @param maxBytes a GOP larger than this is not kept (very long GOPs): dropped until the next IDR, bytes. */
  constructor(
    private readonly maxBytes = 4 * 1024 * 1024,
    options: GopCacheOptions = {},
  ) {
    this.#copy = options.copy ?? false;
  }

  /** The packet as the cache keeps it: itself, or (copy mode) a copy in the cache's buffer. */
  #keep(packet: Buffer): Buffer {
    if (!this.#copy) return packet;
    if (this.#slab === undefined || this.#slabUsed + packet.length > this.#slab.length) {
      // A bigger buffer; the packets already in the old one keep it alive until the GOP ends.
      const size = Math.max(FIRST_SLAB_BYTES, Math.min(this.maxBytes + 2048, (this.#slab?.length ?? 0) * 2), packet.length);
      this.#slab = Buffer.allocUnsafeSlow(size);
      this.#slabUsed = 0;
    }
    const kept = this.#slab.subarray(this.#slabUsed, this.#slabUsed + packet.length);
    packet.copy(kept);
    this.#slabUsed += packet.length;
    return kept;
  }

  /**
   * Takes the next packet of the stream. True when it starts a new GOP (the
   * first packet of an IDR): the cache then holds that IDR's parameter sets
   * and this packet, and nothing older.
   */
  push(packet: Buffer): boolean {
    const payload = rtpPayload(packet);
    if (payload === undefined) return false;
    const ts = packet.readUInt32BE(4);
    // Read once: this runs for every packet of every camera.
    const types = h264NalTypes(payload);
    if (typesAreParameterSets(types)) {
      if (ts !== this.#paramsTs) {
        this.#params = [];
        this.#paramsTs = ts;
      }
      // Copies of their own (a few per GOP): the buffer is rewritten from its start at the next IDR.
      this.#params.push(this.#copy ? Buffer.from(packet) : packet);
    }
    // Parameter sets before a P-frame start nothing; the further packets of an IDR (same timestamp) continue it.
    const starts = typesStartKeyFrame(types) && ts !== this.#gopTs;
    if (starts) {
      this.#gop = this.#paramsTs === ts ? [...this.#params] : [];
      this.#bytes = this.#gop.reduce((n, p) => n + p.length, 0);
      this.#gopTs = ts;
      this.#slabUsed = 0;
    } else if (this.#gopTs === undefined) {
      return false;
    }
    this.#gop.push(this.#keep(packet));
    this.#bytes += packet.length;
    if (this.#bytes > this.maxBytes) this.clear();
    return starts;
  }

  /**
   * The cached packets, oldest first. The cache's own array: copy it to keep
   * it past the next push (in copy mode, the packets too).
   */
  packets(): readonly Buffer[] {
    return this.#gop;
  }

  /** Packets cached. */
  get size(): number {
    return this.#gop.length;
  }

  /** Forgets everything, parameter sets included: what follows is a new stream (or an oversized GOP's rest). */
  clear(): void {
    this.#gop = [];
    this.#bytes = 0;
    this.#gopTs = undefined;
    this.#params = [];
    this.#paramsTs = undefined;
    this.#slab = undefined;
    this.#slabUsed = 0;
  }
}
