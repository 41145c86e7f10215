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
//
// What goes on FFmpeg's command line is ffmpeg-args.ts; reading what it
// prints, and what its exit means, is ffmpeg-output.ts. This file is the
// process: the socket, the spawn, the callbacks, the stop.

import { createSocket, type Socket } from "node:dgram";
import { silentLogger, superviseSpawn, withTimeout, type Logger, type SupervisedChild } from "../../runtime/index.ts";
import { rtpHeader } from "../../media/index.ts";
import { redact, schemeOf, type StreamInfo } from "../../subjects/index.ts";
import { ANALYSIS_FD, buildFfmpegArgs, IngestSourceError, RTP_PAYLOAD_TYPE, type AnalysisPixFmt, type FfmpegArgsOptions, type IngestSpec, type VideoMode } from "./ffmpeg-args.ts";
import { classifyFfmpegExit, cleanDetail, FfmpegStderr, FrameAssembler, lineSplitter, progressParser, type AnalysisFrame, type IngestFailure } from "./ffmpeg-output.ts";

// Names other modules (and tests) import from here, whichever file they live in.
export { buildFfmpegArgs, FRAME_BYTES_PER_PIXEL, IngestSourceError, RTSP_FAST_PROBE, testsrcParams } from "./ffmpeg-args.ts";
export type { AnalysisPixFmt, FfmpegArgsOptions, IngestSpec, VideoMode } from "./ffmpeg-args.ts";
export { classifyFfmpegExit, parseVideoStreamLine } from "./ffmpeg-output.ts";
export type { AnalysisFrame, FfmpegExit, IngestFailure, ParsedVideoStream } from "./ffmpeg-output.ts";

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
   * Every FFmpeg this run spawned, oldest first, with its pid and when
   * (performance.now()): one, or two for a source that is not H.264 with
   * `transcode` on (the copy attempt, then the encoder).
   */
  readonly spawned: readonly { pid: number; at: number }[];
  /**
   * Ends the run: SIGTERM to FFmpeg's process group, SIGKILL after
   * `stopTimeoutMs`. Resolves once FFmpeg has exited (and been reaped) and the
   * UDP socket is closed. No callback fires after it is called. Idempotent.
   */
  stop(): Promise<void>;
}


const DEFAULT_STOP_TIMEOUT_MS = 2_000;
const STDERR_TAIL_LINES = 40;
/** Bound on waiting for FFmpeg's pipes to drain after it exited. */
const PIPE_DRAIN_MS = 1_000;

interface Proc {
  /** FFmpeg under runtime/child-process.ts: own process group, parent-death signal, stderr lines. */
  run: SupervisedChild;
  mode: VideoMode;
  /** Settles when the process has exited and its pipes are drained (or after PIPE_DRAIN_MS). */
  done: Promise<void>;
  /** What its stderr said: the input's stream, the analysis size, the last lines for classifying the exit. */
  stderr: FfmpegStderr;
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
  readonly #spawned: { pid: number; at: number }[] = [];

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
        return { code: "FFMPEG_EXITED", detail: cleanDetail(`ingest failed: ${(err as Error)?.message ?? String(err)}`) };
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

  get spawned(): readonly { pid: number; at: number }[] {
    return this.#spawned;
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
      return { code: err.code, detail: cleanDetail(err.message) };
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
        this.#log.info({ codec: proc.stderr.input?.codec }, "source is not H.264: starting again with transcoding");
        mode = "encode";
        continue;
      }
      const exit = await proc.run.exited;
      return classifyFfmpegExit({
        stderr: proc.stderr.tail,
        code: exit.code,
        signal: exit.signal,
        scheme: this.#scheme,
        inputOpened: proc.stderr.inputOpened,
        inputCodec: proc.stderr.input?.codec,
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
    this.#startedAt = performance.now();
    this.#ready = false;
    this.#firstRtpSeen = false;
    this.#frames = 0;
    this.#rtpSender = undefined;

    let proc!: Proc;
    const run = superviseSpawn(ffmpeg, args, { stdio, tailLines: 0, onStderrLine: (line: string) => this.#onStderr(proc, line) });
    const child = run.child;
    if (child.pid !== undefined) this.#spawned.push({ pid: child.pid, at: this.#startedAt });
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
      stderr: new FfmpegStderr(STDERR_TAIL_LINES),
      wrongCodec: false,
    };
    this.#current = proc;

    lines(child.stdout!, progressParser((block) => this.#onProgressBlock(block)));
    if (withAnalysis) {
      const assembler = new FrameAssembler(this.#opts.analysisPixFmt ?? "gray", (frame) => this.#emit(() => this.#opts.onFrame?.(frame)));
      const pipe = child.stdio[ANALYSIS_FD] as NodeJS.ReadableStream | null;
      pipe?.on("data", (chunk: Buffer) => assembler.push(chunk, proc.stderr.analysis));
      pipe?.on("error", () => {});
    }
    return proc;
  }

  #onStderr(proc: Proc, line: string): void {
    if (this.#log.isLevelEnabled("debug")) this.#log.debug({ ffmpeg: redact(line) }, "ffmpeg stderr");
    if (proc.stderr.push(line) !== "input") return;
    const copying = proc.mode === "copy" && this.#scheme !== "testsrc";
    if (copying && proc.stderr.input!.codec !== "h264") {
      // The copy would fail at the bitstream filter anyway; end it now.
      proc.wrongCodec = true;
      proc.run.signal("SIGKILL");
      return;
    }
    this.#maybeReady();
  }

  #onPacket(packet: Buffer, from: { address: string; port: number }): void {
    if (this.#over) return;
    if (from.address !== "127.0.0.1") return;
    // RTCP (its packet types read as payload types 72–76) and strays are not ours.
    if (rtpHeader(packet)?.payloadType !== RTP_PAYLOAD_TYPE) return;
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
    const input = this.#current?.stderr.input;
    if (this.#ready || this.#over || !this.#firstRtpSeen || !input) return;
    this.#ready = true;
    const stream: StreamInfo = { codec: input.codec, width: input.width, height: input.height, fps: input.fps };
    this.#log.info({ stream, ms: Math.round(performance.now() - this.#startedAt) }, "source ready");
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
  const split = lineSplitter(onLine);
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => split.push(chunk));
  stream.on("end", () => split.end());
  stream.on("error", () => {});
}
