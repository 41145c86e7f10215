// Reading what FFmpeg prints (pure): the stream lines of its stderr (codec,
// size, rate of the input and of the analysis output), the `-progress`
// blocks on stdout, the raw analysis frames on fd 3, and, once it has
// exited, the failure class of its last stderr lines. No process here:
// ingest.ts feeds these from the running FFmpeg, and tests feed them stderr
// captured from Debian's ffmpeg 5.1.

import { redact, type CameraErrorCode } from "../../subjects/index.ts";
import { FRAME_BYTES_PER_PIXEL, type AnalysisPixFmt } from "./ffmpeg-args.ts";

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

export interface IngestFailure {
  code: CameraErrorCode;
  /** One line for people: what FFmpeg said, credentials redacted. */
  detail: string;
}

/** A `tbr` above this is a time base, not a frame rate. */
const MAX_PLAUSIBLE_FPS = 240;

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

/**
 * What FFmpeg's stderr has said so far about the run, line by line: whether
 * the input opened, the input's video stream, the size of the analysis
 * output (output #1), and the last lines, for classifying the exit.
 */
export class FfmpegStderr {
  /** The last `tailLines` lines, oldest first. */
  readonly tail: string[] = [];
  /** FFmpeg printed "Input #0": the source answered and was probed. */
  inputOpened = false;
  /** The input's video stream, once FFmpeg named it. */
  input?: ParsedVideoStream;
  /** Frame size of the analysis output, once FFmpeg named it. */
  analysis?: { width: number; height: number };
  #section: "none" | "input" | "output" = "none";
  #outputIndex = -1;

  constructor(private readonly tailLines = 40) {}

  /** Reads one line; "input" when it is the line that named the input's video stream (once per run). */
  push(line: string): "input" | undefined {
    this.tail.push(line);
    if (this.tail.length > this.tailLines) this.tail.shift();
    const section = /^(Input|Output) #(\d+),/.exec(line);
    if (section) {
      this.#section = section[1] === "Input" ? "input" : "output";
      if (this.#section === "input") this.inputOpened = true;
      else this.#outputIndex = Number(section[2]);
      return undefined;
    }
    if (/^Stream mapping:/.test(line)) {
      this.#section = "none";
      return undefined;
    }
    const parsed = parseVideoStreamLine(line);
    if (!parsed) return undefined;
    if (this.#section === "input" && parsed.file === 0 && !this.input) {
      this.input = parsed.stream;
      return "input";
    }
    if (this.#section === "output" && parsed.file === 1 && this.#outputIndex === 1 && !this.analysis) {
      this.analysis = { width: parsed.stream.width, height: parsed.stream.height };
    }
    return undefined;
  }
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
 * Turns how FFmpeg ended into a camera error code of the contract (docs/contract.md; pure). Credentials in the
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
  if (auth) return { code: "SOURCE_AUTH", detail: cleanDetail(auth) };

  const copying = exit.copying ?? true;
  if (copying && exit.inputCodec !== undefined && exit.inputCodec !== "h264") {
    return { code: "UNSUPPORTED_CODEC", detail: `source video is ${exit.inputCodec}, not H.264, and transcoding is off` };
  }
  const codec = lastMatching(CODEC);
  if (codec) return { code: "UNSUPPORTED_CODEC", detail: cleanDetail(codec) };

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
  if (unreachable) return { code: "SOURCE_UNREACHABLE", detail: cleanDetail(unreachable) };

  if (exit.spawnError) return { code: "FFMPEG_EXITED", detail: cleanDetail(`could not start ffmpeg: ${exit.spawnError}`) };
  const tail = lines.filter((l) => !NOISE.some((p) => p.test(l))).slice(-DETAIL_TAIL_LINES);
  if (exit.code === 0) {
    // A live source that closes the connection (the camera rebooted, the
    // server went away or ended the session) reads as a normal end of input.
    return { code: "FFMPEG_EXITED", detail: cleanDetail(`the source ended the stream (ffmpeg exited with code 0)${tail.length ? `: ${tail.join(" | ")}` : ""}`) };
  }
  const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
  return { code: "FFMPEG_EXITED", detail: cleanDetail(`ffmpeg ${how}${tail.length ? `: ${tail.join(" | ")}` : ""}`) };
}

/** Redacted, without FFmpeg's context addresses ("[rtsp @ 0x55…]" → "[rtsp]"), bounded: a detail fit for a status. */
export function cleanDetail(text: string): string {
  const out = redact(text.replace(/ @ 0x[0-9a-f]+\]/g, "]").trim());
  return out.length > DETAIL_MAX_CHARS ? `${out.slice(0, DETAIL_MAX_CHARS - 1)}…` : out;
}

/** Splits a text stream's chunks into lines (\n, \r\n or \r); `end` delivers a last line without its newline. */
export function lineSplitter(onLine: (line: string) => void): { push(chunk: string): void; end(): void } {
  let partial = "";
  return {
    push(chunk) {
      const parts = (partial + chunk).split(/\r\n|\n|\r/);
      partial = parts.pop() ?? "";
      for (const l of parts) onLine(l);
    },
    end() {
      if (partial) onLine(partial);
      partial = "";
    },
  };
}

/** `-progress` output: key=value lines, each block closed by `progress=continue|end`. */
export function progressParser(onBlock: (block: Map<string, string>) => void): (line: string) => void {
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
export class FrameAssembler {
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(
    readonly pixFmt: AnalysisPixFmt,
    readonly onFrame: (frame: AnalysisFrame) => void,
    /** Stamps each frame (`AnalysisFrame.ts`): wall-clock ms. */
    private readonly wallNow: () => number = Date.now,
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
      this.onFrame({ data, width: size.width, height: size.height, pixFmt: this.pixFmt, ts: this.wallNow() });
    }
    this.#pending = all.length ? [all] : [];
    this.#pendingBytes = all.length;
  }
}

/** Analysis bytes kept while the frame size is unknown. */
const MAX_UNSIZED_BYTES = 64 << 20;

