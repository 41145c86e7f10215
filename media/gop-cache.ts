import { h264NalTypes, rtpPayload } from "./webrtc.ts";

/**
 * The RTP of the source's current GOP, from its last IDR (with the SPS/PPS
 * sent just before it) on. The camera keeps it while ingesting, so a WHIP
 * session that starts (an on-demand viewer arrived) begins with a frame a
 * decoder can start at, instead of waiting for the source's next IDR:
 * copied H.264 cannot make one on request.
 */
export class GopCache {
  #gop: Buffer[] = [];
  #bytes = 0;
  #gopTs?: number;
  #params: Buffer[] = [];
  #paramsTs?: number;

  /** @param maxBytes a GOP larger than this is not kept (very long GOPs), bytes. */
  constructor(private readonly maxBytes = 4 * 1024 * 1024) {}

  push(packet: Buffer): void {
    const payload = rtpPayload(packet);
    if (payload === undefined) return;
    const ts = packet.readUInt32BE(4);
    const types = h264NalTypes(payload);
    if (types.length > 0 && types.every((t) => t === 7 || t === 8 || t === 6)) {
      if (ts !== this.#paramsTs) {
        this.#params = [];
        this.#paramsTs = ts;
      }
      this.#params.push(packet);
    }
    if (types.includes(5) && ts !== this.#gopTs) {
      this.#gop = this.#paramsTs === ts ? [...this.#params] : [];
      this.#bytes = this.#gop.reduce((n, p) => n + p.length, 0);
      this.#gopTs = ts;
    } else if (this.#gopTs === undefined) {
      return;
    }
    this.#gop.push(packet);
    this.#bytes += packet.length;
    if (this.#bytes > this.maxBytes) this.clear();
  }

  /** The cached packets, oldest first. */
  packets(): readonly Buffer[] {
    return this.#gop;
  }

  clear(): void {
    this.#gop = [];
    this.#bytes = 0;
    this.#gopTs = undefined;
  }
}
