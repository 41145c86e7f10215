import { CamfleetError } from "../subjects/index.ts";
import { LOOPBACK } from "./webrtc.ts";

/**
 * SDP text: what the relay checks in an offer before werift sees it, and the
 * candidate filter of loopback-only setups.
 *
 * The checks exist because werift accepts some garbage without complaint,
 * and the caller deserves a precise 400 (malformed) or 406 (no H.264; SIP's
 * 488 Not Acceptable Here).
 */

/** Largest SDP body the media routes accept, bytes. Real offers are 2–8 KiB. */
export const MAX_SDP_BYTES = 64 * 1024;

export interface OfferSummary {
  /** Payload types of H.264 in the video section(s). */
  h264PayloadTypes: number[];
}

/** Throws INVALID_ARGUMENT for a malformed offer and UNSUPPORTED_MEDIA when no video section offers H.264. */
export function checkOffer(sdp: string, direction: "send" | "receive"): OfferSummary {
  const lines = sdp.split(/\r?\n/).filter((l) => l !== "");
  if (lines[0] !== "v=0") throw new CamfleetError("INVALID_ARGUMENT", "malformed SDP offer: it must start with v=0");
  const bad = lines.find((l) => !/^[a-z]=/.test(l));
  if (bad !== undefined) throw new CamfleetError("INVALID_ARGUMENT", `malformed SDP offer: line ${JSON.stringify(bad.slice(0, 40))} is not <type>=<value>`);
  if (!lines.some((l) => l.startsWith("o="))) throw new CamfleetError("INVALID_ARGUMENT", "malformed SDP offer: no o= line");
  const media = lines.filter((l) => l.startsWith("m="));
  if (media.length === 0) throw new CamfleetError("INVALID_ARGUMENT", "malformed SDP offer: no media section (m=)");
  // Without any one of them the session dies right after its 201 (found by test/fuzz.test.ts): refuse it instead.
  const missing = ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"].filter((attr) => !lines.some((l) => l.startsWith(attr)));
  if (missing.length > 0) {
    throw new CamfleetError("INVALID_ARGUMENT", `malformed SDP offer: WebRTC needs a=ice-ufrag, a=ice-pwd and a=fingerprint (missing ${missing.map((m) => m.slice(0, -1)).join(", ")})`);
  }

  // Walk the video sections: H.264 by rtpmap, and a direction that fits.
  const h264: number[] = [];
  let inVideo = false;
  let videoSections = 0;
  let directionOk = false;
  let sectionDirection = "sendrecv";
  const closeSection = () => {
    if (!inVideo) return;
    const wanted = direction === "send" ? ["sendonly", "sendrecv"] : ["recvonly", "sendrecv"];
    if (wanted.includes(sectionDirection)) directionOk = true;
  };
  for (const line of lines) {
    if (line.startsWith("m=")) {
      closeSection();
      inVideo = /^m=video [1-9]\d* /.test(line) || /^m=video 9 /.test(line);
      if (inVideo) videoSections++;
      sectionDirection = "sendrecv";
      continue;
    }
    if (!inVideo) continue;
    const dir = /^a=(sendonly|recvonly|sendrecv|inactive)$/.exec(line);
    if (dir) sectionDirection = dir[1]!;
    const map = /^a=rtpmap:(\d+) H264\/90000$/i.exec(line);
    if (map) h264.push(Number(map[1]));
  }
  closeSection();
  if (videoSections === 0) throw new CamfleetError("UNSUPPORTED_MEDIA", "the SDP offer has no video section; this relay carries H.264 video only");
  if (h264.length === 0) throw new CamfleetError("UNSUPPORTED_MEDIA", "the SDP offer has no H.264 codec (H264/90000); this relay copies H.264 and cannot transcode");
  if (!directionOk) {
    throw new CamfleetError(
      "UNSUPPORTED_MEDIA",
      direction === "send" ? "the WHIP offer does not send video (a=sendonly or sendrecv needed)" : "the WHEP offer does not receive video (a=recvonly or sendrecv needed)",
    );
  }
  return { h264PayloadTypes: h264 };
}

/**
 * Drops every `a=candidate` line that is not a UDP candidate on 127.0.0.1.
 * For loopback-only setups (tests): peers offer all their interfaces.
 */
export function keepLoopbackCandidates(sdp: string): string {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  return sdp
    .split(eol)
    .filter((line) => {
      if (!line.startsWith("a=candidate:")) return true;
      // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …
      const fields = line.slice("a=candidate:".length).split(" ");
      return fields[2]?.toLowerCase() === "udp" && fields[4] === LOOPBACK;
    })
    .join(eol);
}
