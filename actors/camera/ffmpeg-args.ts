// FFmpeg's command line for one camera, built from its spec (pure): which
// demuxer options the source's scheme needs, the RTP output for WebRTC, and
// the optional analysis output on fd 3. The process that runs it is
// ingest.ts; what it prints is read by ffmpeg-output.ts.

import { fileURLToPath } from "node:url";
import { schemeOf, type CameraErrorCode, type CameraSpec } from "../../subjects/index.ts";

/** Pixel formats the analysis output can have; bytes per pixel in FRAME_BYTES_PER_PIXEL. */
export type AnalysisPixFmt = "gray" | "rgb24";

/** The source cannot be used as given; found before anything is spawned. */
export class IngestSourceError extends Error {
  override name = "IngestSourceError";
  readonly code: CameraErrorCode;

  constructor(code: CameraErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export type VideoMode = "copy" | "encode";

export interface FfmpegArgsOptions {
  /** UDP port on 127.0.0.1 the RTP goes to. */
  rtpPort: number;
  allowLocalSources: boolean;
  /** "copy" (default) passes H.264 through; "encode" runs libx264. `testsrc:` is always encoded. */
  video?: VideoMode;
  /** Socket I/O timeout FFmpeg applies to the source, ms. Default 5000. */
  ioTimeoutMs?: number;
  analysisWidth?: number;
  analysisPixFmt?: AnalysisPixFmt;
}

export type IngestSpec = Pick<CameraSpec, "url" | "rtsp_transport" | "ai">;

export const DEFAULT_IO_TIMEOUT_MS = 5_000;
const DEFAULT_ANALYSIS_WIDTH = 320;
export const RTP_PAYLOAD_TYPE = 96;
/** Fits WebRTC's SRTP overhead into a 1500-byte path MTU. */
const RTP_PACKET_SIZE = 1200;
const PROGRESS_PERIOD_S = "0.5";
/**
 * RTSP input without probing. The SDP already names the codec and carries the
 * SPS (size) and usually the frame rate; FFmpeg's default probing (5 s of
 * analysis, up to 5 MB) only delays the first packet, by ~3.2 s for a
 * 320x240@10 camera measured here, against ~0.45 s with these. Copy needs no
 * decoded parameters, and the decoder of the analysis output reads the size
 * from the first SPS. fps may then be 0 in the input line: the actor reuses
 * the camera's last known stream parameters for what is missing.
 */
export const RTSP_FAST_PROBE = ["-probesize", "32", "-analyzeduration", "0", "-fpsprobesize", "0"];
const TESTSRC_DEFAULT = { width: 640, height: 360, rate: 15, pattern: "testsrc" as TestsrcPattern };

/**
 * Pictures a `testsrc:` source can show (`?pattern=`), all FFmpeg lavfi
 * sources, so a demo needs nothing but FFmpeg: `testsrc` (FFmpeg's test
 * pattern; its counter and gradient change every frame), `bars` (SMPTE colour
 * bars: a still picture), `ball` (a square gliding over a dark background: one
 * moving object, for the motion detector's boxes).
 */
export const TESTSRC_PATTERNS = ["testsrc", "bars", "ball"] as const;
export type TestsrcPattern = (typeof TESTSRC_PATTERNS)[number];
/** Seconds between key frames we encode; a new viewer waits at most this long for a picture. */
const ENCODE_KEYFRAME_S = 2;
export const FRAME_BYTES_PER_PIXEL: Record<AnalysisPixFmt, number> = { gray: 1, rgb24: 3 };
/** fd of the analysis pipe in the child (0–2 are stdin/stdout/stderr). */
export const ANALYSIS_FD = 3;

/**
 * FFmpeg's arguments for one camera (pure). Output #0 is always the RTP
 * video; output #1, the analysis frames on fd 3, exists only with
 * `spec.ai.enabled`. Throws IngestSourceError for a source it will not open.
 */
export function buildFfmpegArgs(spec: IngestSpec, opts: FfmpegArgsOptions): string[] {
  const scheme = schemeOf(spec.url);
  const local = scheme === "file" || scheme === "testsrc";
  if (local && !opts.allowLocalSources) {
    throw new IngestSourceError("SOURCE_NOT_ALLOWED", `${scheme}: sources need ALLOW_LOCAL_SOURCES on this node`);
  }
  if (!Number.isInteger(opts.rtpPort) || opts.rtpPort <= 0 || opts.rtpPort > 65_535) {
    throw new TypeError(`FfmpegArgsOptions.rtpPort must be a port number, got ${opts.rtpPort}`);
  }
  const timeoutUs = String(Math.round((opts.ioTimeoutMs ?? DEFAULT_IO_TIMEOUT_MS) * 1000));
  const mode: VideoMode = scheme === "testsrc" ? "encode" : (opts.video ?? "copy");

  const args = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"];
  args.push("-progress", "pipe:1", "-stats_period", PROGRESS_PERIOD_S);

  switch (scheme) {
    case "rtsp":
    case "rtsps":
      // -timeout is the RTSP demuxer's socket I/O timeout in µs (ffmpeg 5.1;
      // older versions called it -stimeout). Video only: no SETUP for audio.
      args.push("-rtsp_transport", spec.rtsp_transport, "-timeout", timeoutUs, "-allowed_media_types", "video");
      args.push(...RTSP_FAST_PROBE, "-i", spec.url);
      break;
    case "http":
    case "https":
      args.push("-rw_timeout", timeoutUs, "-i", spec.url);
      break;
    case "srt":
    case "udp":
      // Both protocols' own -timeout (µs); -rw_timeout does not end a udp read.
      args.push("-timeout", timeoutUs, "-i", spec.url);
      break;
    case "file":
      // A file plays in real time, forever, like a camera.
      args.push("-re", "-stream_loop", "-1", "-i", `file:${filePath(spec.url)}`);
      break;
    case "testsrc": {
      const t = testsrcParams(spec.url);
      args.push("-re", "-f", "lavfi", "-i", lavfiGraph(t));
      break;
    }
    default:
      throw new IngestSourceError("SOURCE_UNREACHABLE", `unsupported URL scheme ${scheme ?? "(none)"}:`);
  }

  // Output #0: RTP for WebRTC. Copy keeps FFmpeg's default of dropping
  // packets before the first key frame, so the first RTP decodes.
  args.push("-map", "0:v:0");
  if (mode === "copy") {
    args.push("-c:v", "copy", "-bsf:v", "h264_mp4toannexb");
  } else {
    // yuv420p before the baseline profile (testsrc is RGB). One thread: one
    // slice per frame (zerolatency's sliced threads split frames, see
    // found on Debian 12 here). Key frames on a clock, whatever the source's rate.
    args.push("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency");
    args.push("-pix_fmt", "yuv420p", "-profile:v", "baseline", "-threads", "1");
    args.push("-force_key_frames", `expr:gte(t,n_forced*${ENCODE_KEYFRAME_S})`);
  }
  // No RTCP: FFmpeg would send its sender reports to rtpPort + 1, which may
  // be another camera's socket; the WebRTC leg has RTCP of its own.
  args.push("-f", "rtp", "-payload_type", String(RTP_PAYLOAD_TYPE), "-rtpflags", "skip_rtcp");
  args.push(`rtp://127.0.0.1:${opts.rtpPort}?pkt_size=${RTP_PACKET_SIZE}`);

  // Output #1: analysis frames. Decoding costs CPU, so only with AI on.
  if (spec.ai.enabled) {
    const width = opts.analysisWidth ?? DEFAULT_ANALYSIS_WIDTH;
    if (!Number.isInteger(width) || width < 16 || width > 7680 || width % 2 !== 0) {
      throw new TypeError(`FfmpegArgsOptions.analysisWidth must be an even integer in 16..7680, got ${width}`);
    }
    const sample = spec.ai.every_n !== undefined ? `select=not(mod(n\\,${spec.ai.every_n}))` : `fps=${spec.ai.max_fps}`;
    args.push("-map", "0:v:0", "-vf", `${sample},scale=w=min(${width}\\,iw):h=-2`);
    // Frames as the filter made them: no duplicates to fill a constant rate.
    args.push("-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", opts.analysisPixFmt ?? "gray", `pipe:${ANALYSIS_FD}`);
  }
  return args;
}

function filePath(url: string): string {
  try {
    return fileURLToPath(new URL(url));
  } catch (err) {
    throw new IngestSourceError("SOURCE_UNREACHABLE", `not a usable file: URL (${(err as Error).message})`);
  }
}

/** The lavfi input graph of a `testsrc:` source; its values come from testsrcParams only. */
function lavfiGraph(t: { width: number; height: number; rate: number; pattern: TestsrcPattern }): string {
  const size = `${t.width}x${t.height}`;
  switch (t.pattern) {
    case "testsrc":
      return `testsrc=size=${size}:rate=${t.rate}`;
    case "bars":
      return `smptebars=size=${size}:rate=${t.rate}`;
    case "ball": {
      // A square of a sixth of the height on a Lissajous path: always moving, never leaving the frame.
      const side = Math.max(8, Math.round(t.height / 6 / 2) * 2);
      return (
        `color=c=0x203040:size=${size}:rate=${t.rate}[bg];color=c=0xf0c020:size=${side}x${side}:rate=${t.rate}[ball];` +
        `[bg][ball]overlay=x='(W-w)*(0.5+0.5*sin(t*0.9))':y='(H-h)*(0.5+0.5*cos(t*0.6))':shortest=1`
      );
    }
  }
}

/** `testsrc:?size=WxH&rate=R&pattern=P`; strict, because the values go into a filter graph. */
export function testsrcParams(url: string): { width: number; height: number; rate: number; pattern: TestsrcPattern } {
  const out = { ...TESTSRC_DEFAULT };
  const query = url.slice(url.indexOf(":") + 1).replace(/^\/*\??/, "");
  for (const [key, value] of new URLSearchParams(query)) {
    if (key === "size") {
      const m = /^(\d{1,4})x(\d{1,4})$/.exec(value);
      const [w, h] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
      if (!(w >= 16 && w <= 7680 && h >= 16 && h <= 4320 && w % 2 === 0 && h % 2 === 0)) {
        throw new IngestSourceError("SOURCE_UNREACHABLE", `testsrc: size must be WxH, even, 16x16 to 7680x4320; got "${value}"`);
      }
      out.width = w;
      out.height = h;
    } else if (key === "rate") {
      const r = /^\d{1,3}(\.\d{1,3})?$/.test(value) ? Number(value) : NaN;
      if (!(r > 0 && r <= 120)) throw new IngestSourceError("SOURCE_UNREACHABLE", `testsrc: rate must be a number in (0, 120]; got "${value}"`);
      out.rate = r;
    } else if (key === "pattern") {
      const pattern = TESTSRC_PATTERNS.find((p) => p === value);
      if (pattern === undefined) throw new IngestSourceError("SOURCE_UNREACHABLE", `testsrc: pattern must be one of ${TESTSRC_PATTERNS.join(", ")}; got "${value}"`);
      out.pattern = pattern;
    } else {
      throw new IngestSourceError("SOURCE_UNREACHABLE", `testsrc: unknown parameter "${key}" (size, rate and pattern are known)`);
    }
  }
  return out;
}

