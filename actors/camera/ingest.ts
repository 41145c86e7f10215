// One FFmpeg process per camera: it reads the source once and
//   - copies the H.264 video, unchanged, as RTP to a UDP socket this module
//     binds on 127.0.0.1; every packet goes to `onRtp` (the WHIP publisher
//     feeds them to werift);
//   - with AI on, also decodes, samples and scales frames and writes them raw
//     to an extra pipe (fd 3), each going to `onFrame`;
//   - reports progress on stdout (`-progress pipe:1`) and its log on stderr,
//     from which the stream info (codec, size, fps) and the failure class come.
//
// Codec detection costs no second connection: FFmpeg names the input's codec
// on stderr ("Stream #0:0: Video: h264 …, 640x360 …, 15 fps") before it
// writes any packet. A copy of anything but H.264 is cut short right there
// (the h264_mp4toannexb filter would refuse it anyway) and reported as
// UNSUPPORTED_CODEC, or, with `transcode`, FFmpeg is started once more with
// libx264 for that source. H.264 is never re-encoded.
//
// FFmpeg runs under runtime/child-process.ts like every helper process: an
// argument array (no shell), `setpriv --pdeathsig KILL` (it dies with this
// process, even on SIGKILL), its own process group (stop() signals the whole
// group), the inherited environment (the test suite's leak check follows a
// variable every child inherits). stop() resolves only after the exit.

import { createSocket, type Socket } from "node:dgram";
import { fileURLToPath } from "node:url";
import { silentLogger, type Logger } from "../../runtime/index.ts";
import { redact, schemeOf, type CameraErrorCode, type CameraSpec, type StreamInfo } from "../../subjects/index.ts";
import { superviseSpawn, withTimeout, type SupervisedChild } from "../../runtime/index.ts";

// ---------------------------------------------------------------- public types

/** Pixel formats the analysis output can have; bytes per pixel in FRAME_BYTES_PER_PIXEL. */
export type AnalysisPixFmt = "gray" | "rgb24";

/** One sampled, scaled, raw frame of the analysis output. */
export interface AnalysisFrame {
  /** width × height × bytes per pixel, rows top to bottom, no padding. */
  data: Buffer;
  width: number;
  height: number;
  pixFmt: AnalysisPixFmt;
  /** When the frame arrived here, ms since the Unix epoch. */
  ts: number;
}

export interface IngestProgress {
  /** Video frames FFmpeg has sent as RTP since it started. */
  frames: number;
  /** When `frames` last went up, ms since the Unix epoch. */
  lastFrameTs: number;
  /** Media time of the output, µs, when FFmpeg reported it. */
  outTimeUs?: number;
  /** Processing speed relative to real time (1 = real time), when reported. */
  speed?: number;
}

export interface IngestFailure {
  code: CameraErrorCode;
  /** One line for people: what FFmpeg said, credentials redacted. */
  detail: string;
}

export interface IngestOptions {
  /** Allow `file:` and `testsrc:` URLs (ALLOW_LOCAL_SOURCES). Without it they fail with SOURCE_NOT_ALLOWED and nothing is spawned. */
  allowLocalSources: boolean;
  /** Re-encode a source that is not H.264 to H.264 instead of failing with UNSUPPORTED_CODEC. Default false. H.264 is always copied. */
  transcode?: boolean;
  /** Default: silent. Lines are redacted here, before they reach it. */
  logger?: Logger;
  /** Once per run: the source is open and the first RTP packet has arrived. */
  onReady: (stream: StreamInfo) => void;
  /** About every 0.5 s while the frame count goes up (never when it stands still). */
  onProgress?: (progress: IngestProgress) => void;
  /** At most once per run, and never after stop(): the run is over; FFmpeg has exited and the socket is closed. */
  onFailed: (failure: IngestFailure) => void;
  /** Each RTP packet (payload type 96, H.264), as FFmpeg sent it. */
  onRtp: (packet: Buffer) => void;
  /** Analysis frames; only when the spec has `ai.enabled`. */
  onFrame?: (frame: AnalysisFrame) => void;
  /** Socket I/O timeout FFmpeg applies to the source, ms. Default 5000. */
  ioTimeoutMs?: number;
  /** stop() sends SIGTERM, then SIGKILL after this long, ms. Default 2000. */
  stopTimeoutMs?: number;
  /** Width of analysis frames, pixels; the height keeps the aspect ratio (even). Never upscales. Default 320. */
  analysisWidth?: number;
  /** Pixel format of analysis frames. Default "gray" (what motion analysis needs; 1 byte per pixel). */
  analysisPixFmt?: AnalysisPixFmt;
  /** FFmpeg binary. Default "ffmpeg" on PATH. */
  ffmpegPath?: string;
}

export interface IngestHandle {
  /** pid of the running FFmpeg (setpriv execs it, so it is FFmpeg itself); undefined before the spawn and after the exit. */
  readonly pid: number | undefined;
  /** The local UDP port RTP arrives on; undefined until bound and after the run ends. */
  readonly rtpPort: number | undefined;
  /**
   * Ends the run: SIGTERM to FFmpeg's process group, SIGKILL after
   * `stopTimeoutMs`. Resolves once FFmpeg has exited (and been reaped) and the
   * UDP socket is closed. No callback fires after it is called. Idempotent.
   */
  stop(): Promise<void>;
}

/** The source cannot be used as given; found before anything is spawned. */
export class IngestSourceError extends Error {
  override name = "IngestSourceError";
  readonly code: CameraErrorCode;

  constructor(code: CameraErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

// ---------------------------------------------------------------- arguments

export type VideoMode = "copy" | "encode";

export interface FfmpegArgsOptions {
  /** UDP port on 127.0.0.1 the RTP goes to. */
  rtpPort: number;
  allowLocalSources: boolean;
  /** "copy" (default) passes H.264 through; "encode" runs libx264. `testsrc:` is always encoded. */
  video?: VideoMode;
  /** See IngestOptions. */
  ioTimeoutMs?: number;
  analysisWidth?: number;
  analysisPixFmt?: AnalysisPixFmt;
}

export type IngestSpec = Pick<CameraSpec, "url" | "rtsp_transport" | "ai">;

const DEFAULT_IO_TIMEOUT_MS = 5_000;
const DEFAULT_STOP_TIMEOUT_MS = 2_000;
const DEFAULT_ANALYSIS_WIDTH = 320;
const RTP_PAYLOAD_TYPE = 96;
/** Fits WebRTC's SRTP overhead into a 1500-byte path MTU. */
const RTP_PACKET_SIZE = 1200;
const PROGRESS_PERIOD_S = "0.5";
const TESTSRC_DEFAULT = { width: 640, height: 360, rate: 15 };
/** Seconds between key frames we encode; a new viewer waits at most this long for a picture. */
const ENCODE_KEYFRAME_S = 2;
export const FRAME_BYTES_PER_PIXEL: Record<AnalysisPixFmt, number> = { gray: 1, rgb24: 3 };
/** fd of the analysis pipe in the child (0–2 are stdin/stdout/stderr). */
const ANALYSIS_FD = 3;
/** A `tbr` above this is a time base, not a frame rate. */
const MAX_PLAUSIBLE_FPS = 240;

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
      args.push("-i", spec.url);
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
      args.push("-re", "-f", "lavfi", "-i", `testsrc=size=${t.width}x${t.height}:rate=${t.rate}`);
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
    // FIELD-NOTES). Key frames on a clock, whatever the source's rate.
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

/** `testsrc:?size=WxH&rate=R`; strict, because the values go into a filter graph. */
export function testsrcParams(url: string): { width: number; height: number; rate: number } {
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
    } else {
      throw new IngestSourceError("SOURCE_UNREACHABLE", `testsrc: unknown parameter "${key}" (size and rate are known)`);
    }
  }
  return out;
}

// ---------------------------------------------------------------- stderr parsing

export interface ParsedVideoStream {
  /** FFmpeg's codec name: h264, hevc, mjpeg, rawvideo… */
  codec: string;
  width: number;
  height: number;
  /** Frames per second; the `tbr` when no `fps` is given; 0 when neither is. */
  fps: number;
  /** Pixel format as FFmpeg names it (first word), e.g. yuv420p, gray. */
  pixFmt?: string;
}

/**
 * Parses one of FFmpeg's stream lines, e.g.
 * `  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(tv, smpte170m, progressive), 640x360 [SAR 1:1 DAR 16:9], 15 fps, 15 tbr, 90k tbn`.
 * Returns the file index (0 for the input; the output number in an output
 * section) and the stream, or undefined for anything else.
 */
export function parseVideoStreamLine(line: string): { file: number; stream: ParsedVideoStream } | undefined {
  const m = /^\s*Stream #(\d+):\d+(?:\[[^\]]*\])?(?:\([^)]*\))?: Video: ([A-Za-z0-9_]+)(.*)$/.exec(line);
  if (!m) return undefined;
  const parts = splitTopLevel(m[3]!);
  let width = 0;
  let height = 0;
  let fps: number | undefined;
  let tbr: number | undefined;
  for (const part of parts) {
    const size = /^(\d+)x(\d+)(?:\s|$)/.exec(part);
    if (size && width === 0) {
      width = Number(size[1]);
      height = Number(size[2]);
      continue;
    }
    const rate = /^(\d+(?:\.\d+)?)(k?) (fps|tbr)$/.exec(part);
    if (rate) {
      const value = Number(rate[1]) * (rate[2] === "k" ? 1000 : 1);
      if (rate[3] === "fps") fps = value;
      else tbr = value;
    }
  }
  const pixFmt = /^([a-z0-9_]+)(?:\(|$)/.exec(parts[1] ?? "")?.[1];
  // Without a frame rate FFmpeg may print the time base as tbr ("90k tbr"): not a rate.
  const rate = fps ?? (tbr !== undefined && tbr <= MAX_PLAUSIBLE_FPS ? tbr : 0);
  return { file: Number(m[1]), stream: { codec: m[2]!, width, height, fps: rate, ...(pixFmt ? { pixFmt } : {}) } };
}

/** Splits on ", " outside parentheses and brackets; the first element is what precedes the first comma. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "(" || ch === "[") depth++;
    else if (ch === ")" || ch === "]") depth = Math.max(0, depth - 1);
    if (ch === "," && depth === 0) {
      parts.push(current.trim());
      current = "";
    } else {
      current += ch;
    }
  }
  parts.push(current.trim());
  return parts;
}

// ---------------------------------------------------------------- classification

export interface FfmpegExit {
  /** The last lines FFmpeg wrote to stderr, oldest first. */
  stderr: readonly string[];
  /** Exit code, or null when a signal ended it (or it never started). */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Scheme of the input URL (rtsp, http, udp, file…): some failures read differently per protocol. */
  scheme?: string;
  /** Whether FFmpeg opened the input (printed "Input #0"). */
  inputOpened?: boolean;
  /** Codec FFmpeg named for the input's video, when it did. */
  inputCodec?: string;
  /** Whether the video was copied (default) rather than encoded. */
  copying?: boolean;
  /** Why the process could not be spawned, when it could not. */
  spawnError?: string;
}

const AUTH = [/\b40[13]\b/, /\bUnauthorized\b/i, /\bForbidden\b/i, /authorization failed/i];
const CODEC = [/is not supported by the bitstream filter 'h264_mp4toannexb'/, /\bUnsupported codec\b/i, /Decoder \(codec [^)]*\) not found/];
const UNREACHABLE = [
  /Connection refused/i,
  /Connection timed out/i,
  /No route to host/i,
  /Network is unreachable/i,
  /Host is unreachable/i,
  /Connection reset by peer/i,
  /\b404\b/,
  /\bNot Found\b/, // the HTTP/RTSP reason phrase; FFmpeg's own "not found" is lower case
  /Failed to resolve hostname/i,
  /Name or service not known/i,
  /Temporary failure in name resolution/i,
  /No address associated with hostname/i,
];
const DETAIL_MAX_CHARS = 600;
const DETAIL_TAIL_LINES = 6;
/** FFmpeg lines that never explain an exit. */
const NOISE = [/^\s*$/, /Timestamps are unset in a packet/, /^Exiting normally, received signal/, /^\s+/];

/**
 * Turns how FFmpeg ended into a DESIGN error code (pure). Credentials in the
 * detail are redacted. Order: credentials rejected, codec, unreachable, the
 * stream ending, anything else (FFMPEG_EXITED with the exit and the last lines).
 */
export function classifyFfmpegExit(exit: FfmpegExit): IngestFailure {
  const lines = exit.stderr.map((l) => l.trimEnd()).filter((l) => l.trim() !== "");
  // Match on the line without its URLs: a path or host name must not read as a status.
  const bare = lines.map((l) => l.replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, "<url>"));
  const lastMatching = (patterns: RegExp[], extra?: (l: string) => boolean): string | undefined => {
    for (let i = bare.length - 1; i >= 0; i--) {
      if (patterns.some((p) => p.test(bare[i]!)) || extra?.(bare[i]!)) return lines[i];
    }
    return undefined;
  };

  const auth = lastMatching(AUTH);
  if (auth) return { code: "SOURCE_AUTH", detail: clean(auth) };

  const copying = exit.copying ?? true;
  if (copying && exit.inputCodec !== undefined && exit.inputCodec !== "h264") {
    return { code: "UNSUPPORTED_CODEC", detail: `source video is ${exit.inputCodec}, not H.264, and transcoding is off` };
  }
  const codec = lastMatching(CODEC);
  if (codec) return { code: "UNSUPPORTED_CODEC", detail: clean(codec) };

  const scheme = exit.scheme ?? "";
  const unreachable = lastMatching(UNREACHABLE, (l) => {
    if (exit.inputOpened) return false;
    // An RTSP server that never answers (or a host that never accepts)
    // surfaces as a failed read of the reply after the I/O timeout.
    if ((scheme === "rtsp" || scheme === "rtsps") && /Invalid data found when processing input/.test(l)) return true;
    // UDP and SRT inputs with nothing arriving before their -timeout.
    if ((scheme === "udp" || scheme === "srt") && /Input\/output error/.test(l)) return true;
    return scheme === "file" && /No such file or directory/.test(l);
  });
  if (unreachable) return { code: "SOURCE_UNREACHABLE", detail: clean(unreachable) };

  if (exit.spawnError) return { code: "FFMPEG_EXITED", detail: clean(`could not start ffmpeg: ${exit.spawnError}`) };
  const tail = lines.filter((l) => !NOISE.some((p) => p.test(l))).slice(-DETAIL_TAIL_LINES);
  if (exit.code === 0) {
    // A live source that closes the connection (the camera rebooted, the
    // server went away or ended the session) reads as a normal end of input.
    return { code: "FFMPEG_EXITED", detail: clean(`the source ended the stream (ffmpeg exited with code 0)${tail.length ? `: ${tail.join(" | ")}` : ""}`) };
  }
  const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
  return { code: "FFMPEG_EXITED", detail: clean(`ffmpeg ${how}${tail.length ? `: ${tail.join(" | ")}` : ""}`) };
}

/** Redacted, without FFmpeg's context addresses ("[rtsp @ 0x55…]" → "[rtsp]"), bounded. */
function clean(text: string): string {
  const out = redact(text.replace(/ @ 0x[0-9a-f]+\]/g, "]").trim());
  return out.length > DETAIL_MAX_CHARS ? `${out.slice(0, DETAIL_MAX_CHARS - 1)}…` : out;
}

// ---------------------------------------------------------------- running

const STDERR_TAIL_LINES = 40;
/** Bound on waiting for FFmpeg's pipes to drain after it exited. */
const PIPE_DRAIN_MS = 1_000;

interface Proc {
  /** FFmpeg under runtime/child-process.ts: own process group, parent-death signal, stderr lines. */
  run: SupervisedChild;
  mode: VideoMode;
  /** Settles when the process has exited and its pipes are drained (or after PIPE_DRAIN_MS). */
  done: Promise<void>;
  /** The last STDERR_TAIL_LINES lines, for classifying the exit. */
  stderr: string[];
  section: "none" | "input" | "output";
  outputIndex: number;
  inputOpened: boolean;
  input?: ParsedVideoStream;
  analysis?: { width: number; height: number };
  /** We killed it because the codec is not H.264 and it was being copied. */
  wrongCodec: boolean;
}

/**
 * Starts ingesting one camera. Resolves as soon as the RTP socket is bound
 * and FFmpeg is spawned (`rtpPort` and `pid` are then known), long before the
 * source answers; never rejects. Everything after is reported through the
 * callbacks, none of them before this promise has resolved: `onReady` once the
 * video flows, `onProgress` while it does, `onFailed` once if the run ends
 * without stop() (a refused source, e.g. SOURCE_NOT_ALLOWED, resolves with a
 * handle whose run is already over and reports through onFailed). A run is
 * over after onFailed or stop(); to reconnect, start a new one.
 *
 * Fits the camera actor's `StartIngest` (actors/camera/camera-actor.ts).
 */
export async function startIngest(spec: IngestSpec, opts: IngestOptions): Promise<IngestHandle> {
  const ingest = new Ingest(spec, opts);
  await ingest.started;
  return ingest;
}

class Ingest implements IngestHandle {
  readonly #spec: IngestSpec;
  readonly #opts: IngestOptions;
  readonly #log: Logger;
  readonly #scheme: string;
  #stopped = false;
  /** Set once onFailed was called or stop() began: no callback after that. */
  #over = false;
  #socket: Socket | undefined;
  #port: number | undefined;
  #current: Proc | undefined;
  #stopping: Promise<void> | undefined;
  readonly #run: Promise<void>;
  /** Settles once FFmpeg is spawned, or the run ended before that. */
  readonly started: Promise<void>;
  #onStarted!: () => void;
  // per-run reporting state
  #ready = false;
  #firstRtpSeen = false;
  #frames = 0;
  #rtpSender: { address: string; port: number } | undefined;
  #startedAt = 0;

  constructor(spec: IngestSpec, opts: IngestOptions) {
    this.#spec = spec;
    this.#opts = opts;
    this.#log = opts.logger ?? silentLogger();
    this.#scheme = schemeOf(spec.url) ?? "";
    this.started = new Promise((res) => (this.#onStarted = res));
    this.#run = this.#main()
      .catch((err: unknown): IngestFailure => {
        // A bug here must still end the run with a report, not hang it.
        this.#log.error({ err }, "ingest failed unexpectedly");
        return { code: "FFMPEG_EXITED", detail: clean(`ingest failed: ${(err as Error)?.message ?? String(err)}`) };
      })
      .then(async (failure) => {
        this.#onStarted();
        // Socket closed first: whoever handles onFailed may start the next run at once.
        await this.#closeSocket();
        // After startIngest()'s caller has its handle, even when the run ended at once.
        await new Promise((res) => setImmediate(res));
        if (failure) this.#fail(failure);
      });
  }

  get pid(): number | undefined {
    const p = this.#current;
    return p && !p.run.hasExited() ? p.run.child.pid : undefined;
  }

  get rtpPort(): number | undefined {
    return this.#port;
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopped = true;
      this.#over = true;
      const p = this.#current;
      if (p) await terminate(p, this.#opts.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
      await this.#run;
    })();
    return this.#stopping;
  }

  /** The run; resolves with its failure, or undefined when it was stopped. Leaves the socket to the caller. */
  async #main(): Promise<IngestFailure | undefined> {
    try {
      // Validates the source (and the local-source rule) before binding or spawning anything.
      buildFfmpegArgs(this.#spec, { ...this.#argOptions(), rtpPort: 1 });
    } catch (err) {
      if (!(err instanceof IngestSourceError)) throw err;
      return { code: err.code, detail: clean(err.message) };
    }
    if (this.#stopped) return undefined;
    this.#socket = await bindRtpSocket((packet, from) => this.#onPacket(packet, from));
    this.#port = this.#socket.address().port;

    let mode: VideoMode = "copy";
    for (;;) {
      if (this.#stopped) return undefined;
      const proc = this.#spawn(mode);
      this.#onStarted();
      await proc.done;
      if (this.#stopped) return undefined;
      if (proc.wrongCodec && this.#opts.transcode && mode === "copy") {
        this.#log.info({ codec: proc.input?.codec }, "source is not H.264: starting again with transcoding");
        mode = "encode";
        continue;
      }
      const exit = await proc.run.exited;
      return classifyFfmpegExit({
        stderr: proc.stderr,
        code: exit.code,
        signal: exit.signal,
        scheme: this.#scheme,
        inputOpened: proc.inputOpened,
        inputCodec: proc.input?.codec,
        copying: proc.mode === "copy" && this.#scheme !== "testsrc",
        spawnError: proc.run.spawnError?.message,
      });
    }
  }

  #argOptions(): Omit<FfmpegArgsOptions, "rtpPort"> {
    const o = this.#opts;
    return {
      allowLocalSources: o.allowLocalSources,
      ioTimeoutMs: o.ioTimeoutMs,
      analysisWidth: o.analysisWidth,
      analysisPixFmt: o.analysisPixFmt,
    };
  }

  #spawn(mode: VideoMode): Proc {
    const args = buildFfmpegArgs(this.#spec, { ...this.#argOptions(), rtpPort: this.#port!, video: mode });
    const ffmpeg = this.#opts.ffmpegPath ?? "ffmpeg";
    const withAnalysis = this.#spec.ai.enabled;
    // stdin, stdout (progress), then fd 3 (analysis frames) when AI is on; stderr is always a pipe.
    const stdio: ("ignore" | "pipe")[] = withAnalysis ? ["ignore", "pipe", "pipe"] : ["ignore", "pipe"];
    this.#log.debug({ args: args.map(redact) }, "starting ffmpeg");
    this.#startedAt = Date.now();
    this.#ready = false;
    this.#firstRtpSeen = false;
    this.#frames = 0;
    this.#rtpSender = undefined;

    let proc!: Proc;
    const run = superviseSpawn(ffmpeg, args, { stdio, tailLines: 0, onStderrLine: (line: string) => this.#onStderr(proc, line) });
    const child = run.child;
    let onClose!: () => void;
    const closed = new Promise<void>((res) => (onClose = res));
    child.once("close", () => onClose());
    run.exited.then(() => {
      if (run.spawnError) onClose(); // no 'close' follows a failed spawn
    });
    proc = {
      run,
      mode,
      done: run.exited.then(() => withTimeout(closed, PIPE_DRAIN_MS)).then(() => undefined),
      stderr: [],
      section: "none",
      outputIndex: -1,
      inputOpened: false,
      wrongCodec: false,
    };
    this.#current = proc;

    lines(child.stdout!, progressParser((block) => this.#onProgressBlock(block)));
    if (withAnalysis) {
      const assembler = new FrameAssembler(this.#opts.analysisPixFmt ?? "gray", (frame) => this.#emit(() => this.#opts.onFrame?.(frame)));
      const pipe = child.stdio[ANALYSIS_FD] as NodeJS.ReadableStream | null;
      pipe?.on("data", (chunk: Buffer) => assembler.push(chunk, proc.analysis));
      pipe?.on("error", () => {});
    }
    return proc;
  }

  #onStderr(proc: Proc, line: string): void {
    proc.stderr.push(line);
    if (proc.stderr.length > STDERR_TAIL_LINES) proc.stderr.shift();
    if (this.#log.isLevelEnabled("debug")) this.#log.debug({ ffmpeg: redact(line) }, "ffmpeg stderr");

    const section = /^(Input|Output) #(\d+),/.exec(line);
    if (section) {
      proc.section = section[1] === "Input" ? "input" : "output";
      if (proc.section === "input") proc.inputOpened = true;
      else proc.outputIndex = Number(section[2]);
      return;
    }
    if (/^Stream mapping:/.test(line)) {
      proc.section = "none";
      return;
    }
    const parsed = parseVideoStreamLine(line);
    if (!parsed) return;
    if (proc.section === "input" && parsed.file === 0 && !proc.input) {
      proc.input = parsed.stream;
      const copying = proc.mode === "copy" && this.#scheme !== "testsrc";
      if (copying && parsed.stream.codec !== "h264") {
        // The copy would fail at the bitstream filter anyway; end it now.
        proc.wrongCodec = true;
        proc.run.signal("SIGKILL");
        return;
      }
      this.#maybeReady();
    } else if (proc.section === "output" && parsed.file === 1 && proc.outputIndex === 1 && !proc.analysis) {
      proc.analysis = { width: parsed.stream.width, height: parsed.stream.height };
    }
  }

  #onPacket(packet: Buffer, from: { address: string; port: number }): void {
    if (this.#over) return;
    if (from.address !== "127.0.0.1" || packet.length < 12 || packet[0]! >> 6 !== 2) return;
    if ((packet[1]! & 0x7f) !== RTP_PAYLOAD_TYPE) return; // RTCP (200–204 in this byte) and strays
    // Only FFmpeg sends here, from one port: the first RTP sender is kept, others are dropped.
    if (!this.#rtpSender) this.#rtpSender = from;
    else if (this.#rtpSender.port !== from.port) return;
    if (!this.#firstRtpSeen) {
      this.#firstRtpSeen = true;
      this.#maybeReady();
    }
    this.#emit(() => this.#opts.onRtp(packet));
  }

  #maybeReady(): void {
    const input = this.#current?.input;
    if (this.#ready || this.#over || !this.#firstRtpSeen || !input) return;
    this.#ready = true;
    const stream: StreamInfo = { codec: input.codec, width: input.width, height: input.height, fps: input.fps };
    this.#log.info({ stream, ms: Date.now() - this.#startedAt }, "source ready");
    this.#emit(() => this.#opts.onReady(stream));
  }

  #onProgressBlock(block: Map<string, string>): void {
    const frames = Number(block.get("frame"));
    if (!Number.isFinite(frames) || frames <= this.#frames) return;
    this.#frames = frames;
    // Frames can be counted a moment before the first packet is read here.
    if (!this.#ready) {
      this.#firstRtpSeen = true;
      this.#maybeReady();
    }
    const progress: IngestProgress = { frames, lastFrameTs: Date.now() };
    const outTimeUs = Number(block.get("out_time_us"));
    if (Number.isFinite(outTimeUs) && outTimeUs >= 0) progress.outTimeUs = outTimeUs;
    const speed = Number.parseFloat(block.get("speed") ?? "");
    if (Number.isFinite(speed)) progress.speed = speed;
    this.#emit(() => this.#opts.onProgress?.(progress));
  }

  #fail(failure: IngestFailure): void {
    if (this.#over) return;
    this.#over = true;
    this.#log.warn({ code: failure.code, detail: failure.detail }, "ingest failed");
    this.#emit(() => this.#opts.onFailed(failure), true);
  }

  /** Calls back unless the run is over; a throwing callback is logged, never breaks the ingest. */
  #emit(fn: () => void, evenIfOver = false): void {
    if (this.#over && !evenIfOver) return;
    try {
      fn();
    } catch (err) {
      this.#log.error({ err }, "ingest callback threw");
    }
  }

  async #closeSocket(): Promise<void> {
    const socket = this.#socket;
    this.#socket = undefined;
    this.#port = undefined;
    if (socket) await new Promise<void>((res) => socket.close(() => res()));
  }
}

/** SIGTERM to the group (FFmpeg exits 255 on it: normal), SIGKILL after timeoutMs; resolves once exited and drained. */
async function terminate(proc: Proc, timeoutMs: number): Promise<void> {
  await proc.run.terminate(timeoutMs);
  await proc.done;
}

function bindRtpSocket(onPacket: (packet: Buffer, from: { address: string; port: number }) => void): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: "udp4", recvBufferSize: 1 << 20 });
    socket.once("error", reject);
    socket.on("message", (msg, rinfo) => onPacket(msg, rinfo));
    socket.bind(0, "127.0.0.1", () => {
      socket.off("error", reject);
      socket.on("error", () => {}); // a receive error is not fatal; FFmpeg's exit is what ends a run
      resolve(socket);
    });
  });
}

/** Calls onLine for each line of a text stream (\n, \r\n or \r). */
function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let partial = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    const parts = (partial + chunk).split(/\r\n|\n|\r/);
    partial = parts.pop() ?? "";
    for (const l of parts) onLine(l);
  });
  stream.on("end", () => {
    if (partial) onLine(partial);
    partial = "";
  });
  stream.on("error", () => {});
}

/** `-progress` output: key=value lines, each block closed by `progress=continue|end`. */
function progressParser(onBlock: (block: Map<string, string>) => void): (line: string) => void {
  let block = new Map<string, string>();
  return (line) => {
    const eq = line.indexOf("=");
    if (eq <= 0) return;
    const key = line.slice(0, eq).trim();
    block.set(key, line.slice(eq + 1).trim());
    if (key === "progress") {
      onBlock(block);
      block = new Map();
    }
  };
}

/** Cuts the analysis pipe into frames once their size is known (FFmpeg's output stream line). */
class FrameAssembler {
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(
    readonly pixFmt: AnalysisPixFmt,
    readonly onFrame: (frame: AnalysisFrame) => void,
  ) {}

  push(chunk: Buffer, size: { width: number; height: number } | undefined): void {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (!size || size.width <= 0 || size.height <= 0) {
      // FFmpeg names the size before it writes a frame; should that line be
      // missed, frames cannot be cut, so keep memory bounded instead.
      if (this.#pendingBytes > MAX_UNSIZED_BYTES) {
        this.#pending = [];
        this.#pendingBytes = 0;
      }
      return;
    }
    const frameBytes = size.width * size.height * FRAME_BYTES_PER_PIXEL[this.pixFmt];
    if (this.#pendingBytes < frameBytes) return;
    let all = Buffer.concat(this.#pending, this.#pendingBytes);
    while (all.length >= frameBytes) {
      // A copy, so the consumer may keep it while the rest is reused.
      const data = Buffer.from(all.subarray(0, frameBytes));
      all = all.subarray(frameBytes);
      this.onFrame({ data, width: size.width, height: size.height, pixFmt: this.pixFmt, ts: Date.now() });
    }
    this.#pending = all.length ? [all] : [];
    this.#pendingBytes = all.length;
  }
}

/** Analysis bytes kept while the frame size is unknown. */
const MAX_UNSIZED_BYTES = 64 << 20;

