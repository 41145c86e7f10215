import { onlyParameterSets, startsKeyFrame } from "./h264.ts";
import { rtpPayload } from "./rtp.ts";

/**
 * The RTP of the source's current GOP, from its last IDR (with the SPS/PPS
 * sent just before it, same timestamp) on, as serialized packets. A decoder
 * can start only at an IDR, and copied H.264 cannot make one on request, so
 * whoever starts late replays this instead of waiting for the source's next
 * IDR: the camera keeps it while no WHIP session is up (a session that
 * starts begins with it), the relay keeps one per camera (a viewer that comes
 * up begins with it).
 */
export class GopCache {
  #gop: Buffer[] = [];
  #bytes = 0;
  #gopTs?: number;
  /** The latest packets that carry only parameter sets (SPS/PPS/SEI), and their timestamp. */
  #params: Buffer[] = [];
  #paramsTs?: number;

  /** @param maxBytes a GOP larger than this is not kept (very long GOPs): dropped until the next IDR, bytes. */
  constructor(private readonly maxBytes = 4 * 1024 * 1024) {}

  /**
   * Takes the next packet of the stream. True when it starts a new GOP (the
   * first packet of an IDR): the cache then holds that IDR's parameter sets
   * and this packet, and nothing older.
   */
  push(packet: Buffer): boolean {
    const payload = rtpPayload(packet);
    if (payload === undefined) return false;
    const ts = packet.readUInt32BE(4);
    if (onlyParameterSets(payload)) {
      if (ts !== this.#paramsTs) {
        this.#params = [];
        this.#paramsTs = ts;
      }
      this.#params.push(packet);
    }
    // Parameter sets before a P-frame start nothing; the further packets of an IDR (same timestamp) continue it.
    const starts = startsKeyFrame(payload) && ts !== this.#gopTs;
    if (starts) {
      this.#gop = this.#paramsTs === ts ? [...this.#params] : [];
      this.#bytes = this.#gop.reduce((n, p) => n + p.length, 0);
      this.#gopTs = ts;
    } else if (this.#gopTs === undefined) {
      return false;
    }
    this.#gop.push(packet);
    this.#bytes += packet.length;
    if (this.#bytes > this.maxBytes) this.clear();
    return starts;
  }

  /** The cached packets, oldest first. The cache's own array: copy it to keep it past the next push. */
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
  }
}
