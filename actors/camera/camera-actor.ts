import { createActor, type Actor as XActor } from "xstate";
import { realClock, whipUrlFor } from "../../runtime/index.ts";
import type { Actor, ActorContext, ActorKind, Clock, StopReason, Timer, ViewerReport } from "../../runtime/index.ts";
import { CamfleetError, PUBLISHER_EPOCH_HEADER, PUBLISHER_NODE_HEADER, SNAPSHOT_WIDTH, type CameraError, type CameraErrorCode, type CameraSpec, type CameraStatus, type StreamInfo } from "../../subjects/index.ts";
import type { Analysis } from "./analysis.ts";
import { GopCache, rtpToAnnexB } from "../../media/index.ts";
import type { AnalysisFrame } from "./ffmpeg-output.ts";
import { cameraMachine, DEFAULT_CAMERA_TIMING, stateName, type CameraTiming } from "./machine.ts";
import { CameraMetrics } from "./metrics.ts";
import { decodeSnapshot as ffmpegSnapshot, type DecodeSnapshot } from "./snapshot.ts";

let analysisModule: Promise<typeof Analysis> | undefined;
/** Solutions of a pretrained model (proto/object-detector.ts), which get rgb24 frames instead of gray. */
const MODEL_SOLUTIONS = new Set(["person_detection", "object_detection"]);

/** The Analysis class, imported on first use. */
function loadAnalysis(): Promise<typeof Analysis> {
  analysisModule ??= import("./analysis.ts").then((m) => m.Analysis);
  return analysisModule;
}

/**
 * The camera actor: the lifecycle machine of machine.ts with its effects
 * wired to a real FFmpeg ingest and a WHIP publisher. The media parts are
 * passed in, so the wiring can be read (and tested) on its own.
 */

export interface IngestCallbacks {
  onReady(stream: StreamInfo): void;
  onProgress(progress: { frames: number; lastFrameTs: number }): void;
  /** Called at most once per run, never after stop(). */
  onFailed(failure: { code: CameraErrorCode; detail: string }): void;
  onRtp(packet: Buffer): void;
  /** Sampled, scaled raw frames; only with `spec.ai.enabled`. */
  onFrame?(frame: AnalysisFrame): void;
}

export interface Ingest {
  stop(): Promise<void>;
}

export type StartIngest = (
  spec: CameraSpec,
  options: IngestCallbacks & {
    allowLocalSources: boolean;
    /** The spec's `transcode`: re-encode a source that is not H.264 instead of failing with UNSUPPORTED_CODEC. */
    transcode: boolean;
    logger: ActorContext["logger"];
    /** FFmpeg's socket timeout, ms: longer than the stall timeout, so a frozen source reads as STREAM_STALLED. */
    ioTimeoutMs?: number;
    /** Pixels of the analysed frames: gray (default) or rgb24 for a model. */
    analysisPixFmt?: "gray" | "rgb24";
  },
) => Promise<Ingest>;

export interface Whip {
  writeRtp(packet: Buffer): void;
  stop(): Promise<void>;
  readonly sessionUrl?: string;
  uptimeS(): number;
}

export type StartWhip = (options: {
  url: string;
  token?: string;
  headers?: Record<string, string>;
  trustOrigin?: (origin: string) => Promise<boolean>;
  logger: ActorContext["logger"];
  onUp(): void;
  onFailed(detail: string): void;
}) => Whip;

export interface CameraKindOptions {
  startIngest: StartIngest;
  startWhip: StartWhip;
  timing?: Partial<CameraTiming>;
  /**
   * Time for every decision the actor makes by it: the machine's delays
   * (backoff, stall, connect timeout), the viewer counts' expiry, the
   * on-demand linger, the periodic summary. Default: the real clock.
   */
  clock?: Clock;
  /** Decodes a snapshot; default: a one-shot FFmpeg (snapshot.ts). */
  decodeSnapshot?: DecodeSnapshot;
}

/** A snapshot's decode must finish within this, ms: under the control client's 5 s timeout, with room for the reply. A 1080p GOP of 50 frames took ~0.6–1.1 s on a loaded 2-core host. */
const SNAPSHOT_DEADLINE_MS = 4000;

export function cameraKind(options: CameraKindOptions): ActorKind {
  return {
    name: "camera",
    async start(ctx) {
      return new CameraActor(ctx, options);
    },
  };
}

class CameraActor implements Actor {
  /** A state edge happened in the transition being taken: reported once the snapshot shows the new state. */
  #edgePending = false;
  #spec: CameraSpec;
  readonly #ctx: ActorContext;
  readonly #media: CameraKindOptions;
  readonly #machine: XActor<typeof cameraMachine>;
  readonly #metrics: CameraMetrics;
  #ingest?: Ingest;
  /** Bumped for every ingest run, so callbacks of an old run are ignored. */
  #run = 0;
  #whip?: Whip;
  /** Present while `ai.enabled`: motion gate, detector calls, DetectionEvents. */
  #analysis?: Analysis;
  /** Bumped by every #startAnalysis, so a slow module load cannot install a stale analysis. */
  #analysisGeneration = 0;
  #frames = 0;
  #lastFrameTs?: number;
  readonly #clock: Clock;
  #since: number;
  #summary?: Timer;
  #stopping?: Promise<void>;
  readonly #pending = new Set<Promise<unknown>>();
  /** Viewer counts by gateway, each until it expires (monotonic ms) unless the gateway sends it again. */
  readonly #viewerCounts = new Map<string, { viewers: number; expiresAt: number }>();
  #viewerExpiry?: Timer;
  /** On-demand: someone watches (or stopped watching less than the linger time ago). */
  #demand = false;
  #linger?: Timer;
  /**
   * The source's current GOP, always kept (bounded by GopCache's byte limit):
   * a WHIP session that starts (a viewer arrived) begins with it, not at the
   * next IDR, and a snapshot decodes it to its latest frame. Copied into one
   * buffer the cache reuses (a GOP of a 2 Mbit/s camera is 0.5–1 MB), not
   * kept as the packets themselves: thousands of packets alive for a GOP
   * would make V8 pretenure every Buffer of the node (see srtp-sender.ts).
   * Its packets are valid until the next push: both readers use them at once.
   */
  readonly #gop = new GopCache(undefined, { copy: true });
  /** Snapshot decodes in flight by width (0: full size): concurrent requests share one. */
  readonly #snapshots = new Map<number, Promise<Buffer>>();
  /** Aborted on stop: a decode in flight is killed, not awaited. */
  readonly #abort = new AbortController();

  constructor(ctx: ActorContext, media: CameraKindOptions) {
    this.#ctx = ctx;
    this.#spec = ctx.spec;
    this.#media = media;
    this.#clock = media.clock ?? realClock;
    this.#since = this.#clock.wallNow();
    this.#metrics = CameraMetrics.of(ctx.registry);
    // Every series from the first second; the age is computed when /metrics is scraped.
    const startedAt = this.#since;
    this.#metrics.start(ctx.spec.id, this, () => (this.#clock.wallNow() - (this.#lastFrameTs ?? startedAt)) / 1000);
    const machine = cameraMachine.provide({
      actions: {
        startIngest: () => this.#startIngest(),
        stopIngest: () => this.#stopIngest(),
        startPublish: () => this.#startPublish(),
        stopPublish: () => this.#stopPublish(),
        // xstate runs entry actions before the actor's snapshot moves to the new state, so a report
        // made right here would name the state being left (STREAMING went out as CONNECTING, and
        // the real STREAMING only with the next periodic summary, seconds later). The edge is noted
        // here and reported from the subscription below, which sees the new snapshot.
        reportEdge: () => {
          this.#edgePending = true;
        },
      },
    });
    this.#machine = createActor(machine, {
      clock: this.#clock,
      input: { timing: { ...DEFAULT_CAMERA_TIMING, ...media.timing }, publishWanted: publishWanted(ctx.spec, false) },
    });
    this.#machine.subscribe((snapshot) => {
      const state = stateName(snapshot.value);
      if (this.#edgePending) {
        this.#edgePending = false;
        this.#report("edge");
      }
      if (this.#stopping !== undefined) return; // its series are gone with the actor
      this.#metrics.up.set({ camera: this.#spec.id }, state === "STREAMING" ? 1 : 0);
    });
    this.#machine.start();
    this.#startAnalysis();
    this.#machine.send({ type: "START" });
    this.#scheduleSummary();
  }

  /** The periodic StatusEvent: a timer re-armed after each, on the actor's clock. */
  #scheduleSummary(): void {
    this.#summary = this.#clock.setTimeout(() => {
      if (this.#stopping !== undefined) return;
      this.#report("periodic");
      this.#scheduleSummary();
    }, this.#ctx.summaryIntervalMs);
  }

  #track<T>(p: Promise<T>): void {
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
  }

  #startIngest(): void {
    const run = ++this.#run;
    const current = () => run === this.#run && this.#stopping === undefined;
    const started = this.#media
      .startIngest(this.#spec, {
        allowLocalSources: this.#ctx.config.allowLocalSources,
        transcode: this.#spec.transcode,
        // A model sees colour (COCO classes are told apart by it too); motion needs only gray, a third of the bytes.
        analysisPixFmt: this.#spec.solutions.some((s) => MODEL_SOLUTIONS.has(s)) ? "rgb24" : "gray",
        logger: this.#ctx.logger,
        ioTimeoutMs: this.#machine.getSnapshot().context.timing.stallTimeoutMs * 2,
        onReady: (stream) => {
          if (!current()) return;
          this.#metrics.fps.set({ camera: this.#spec.id }, stream.fps);
          this.#machine.send({ type: "SOURCE_READY", stream });
        },
        onProgress: ({ frames, lastFrameTs }) => {
          if (!current()) return;
          if (frames > this.#frames) this.#machine.send({ type: "PROGRESS" });
          this.#frames = frames;
          this.#lastFrameTs = lastFrameTs;
        },
        onFailed: ({ code, detail }) => {
          if (!current()) return;
          this.#metrics.countError(this.#spec.id, code);
          this.#machine.send({ type: "SOURCE_FAILED", code, detail });
        },
        onRtp: (packet) => {
          if (run !== this.#run) return;
          this.#gop.push(packet);
          this.#whip?.writeRtp(packet);
        },
        onFrame: (frame) => {
          if (run === this.#run) this.#analysis?.onFrame(frame);
        },
      })
      .then(
        (ingest) => {
          if (run === this.#run && this.#stopping === undefined) this.#ingest = ingest;
          else this.#track(ingest.stop());
        },
        (err: unknown) => {
          if (!current()) return;
          this.#metrics.countError(this.#spec.id, "FFMPEG_EXITED");
          this.#machine.send({ type: "SOURCE_FAILED", code: "FFMPEG_EXITED", detail: err instanceof Error ? err.message : String(err) });
        },
      );
    this.#track(started);
  }

  /**
   * (Re)creates the analysis for the current spec; analysis errors are status
   * edges without a state change. The analysis module (and gRPC with it, ~20 MB)
   * is loaded when the first camera with AI starts, not by every node.
   */
  #startAnalysis(): void {
    const generation = ++this.#analysisGeneration;
    const old = this.#analysis;
    this.#analysis = undefined;
    if (old !== undefined) this.#track(old.stop());
    if (!this.#spec.ai.enabled || this.#stopping !== undefined) return;
    const loading = loadAnalysis().then(
      (AnalysisClass) => {
        if (generation === this.#analysisGeneration && this.#stopping === undefined) this.#createAnalysis(AnalysisClass);
      },
      (err: unknown) => this.#ctx.logger.error({ err }, "could not load the analysis module"),
    );
    this.#track(loading);
  }

  #createAnalysis(AnalysisClass: typeof Analysis): void {
    const analysis: Analysis = new AnalysisClass({
      spec: this.#spec,
      endpoint: this.#ctx.config.aiEndpoint,
      ...(this.#ctx.config.aiTls !== undefined ? { tls: this.#ctx.config.aiTls } : {}),
      logger: this.#ctx.logger,
      registry: this.#ctx.registry,
      clock: this.#clock,
      publish: (report) => this.#ctx.publishDetection(report),
      // From the node, not this analysis: a new analysis (changed AI settings) or actor goes on counting.
      nextFrameId: () => this.#ctx.nextFrameId(),
      onErrorChange: (error) => {
        if (this.#analysis !== analysis) return;
        if (error !== undefined) this.#metrics.countError(this.#spec.id, error.code);
        this.#report("edge", false);
      },
    });
    this.#analysis = analysis;
  }

  /** The error a status shows: the state's own in ERROR, else publishing's, else analysis'. */
  #error(): CameraError | undefined {
    const snap = this.#machine.getSnapshot();
    if (stateName(snap.value) === "ERROR") return snap.context.error;
    return snap.context.publishError ?? this.#analysis?.error;
  }

  #stopIngest(): void {
    this.#run++;
    this.#gop.clear();
    const ingest = this.#ingest;
    this.#ingest = undefined;
    if (ingest !== undefined) this.#track(ingest.stop());
  }

  #startPublish(): void {
    this.#stopPublish();
    const whip = this.#media.startWhip({
      url: whipUrlFor(this.#ctx.config.whipUrl, this.#spec.id),
      // The built-in relay's gateway asks for the API token on /whip like on every route.
      ...(this.#ctx.config.apiToken !== undefined ? { token: this.#ctx.config.apiToken } : {}),
      // The relay lets only the camera's owner publish, under the lease epoch it holds now.
      headers: { [PUBLISHER_NODE_HEADER]: this.#ctx.node, [PUBLISHER_EPOCH_HEADER]: String(this.#ctx.epoch) },
      // A redirect to another origin carries the token only to the gateway that holds the camera's relay.
      trustOrigin: (origin) => this.#ctx.trustsOrigin(origin),
      logger: this.#ctx.logger,
      onUp: () => {
        if (this.#whip !== whip) return;
        // Viewers get a picture at once: the GOP so far, then the live packets.
        for (const packet of this.#gop.packets()) whip.writeRtp(packet);
        this.#machine.send({ type: "WHIP_UP" });
      },
      onFailed: (detail) => {
        if (this.#whip !== whip) return;
        this.#metrics.countError(this.#spec.id, "WHIP_FAILED");
        this.#machine.send({ type: "WHIP_FAILED", detail });
      },
    });
    this.#whip = whip;
  }

  #stopPublish(): void {
    const whip = this.#whip;
    this.#whip = undefined;
    if (whip !== undefined) this.#track(whip.stop());
  }

  /** `stateEdge`: the state itself changed (an analysis error is an edge, but the camera stays in its state). */
  #report(trigger: "edge" | "periodic", stateEdge = trigger === "edge"): void {
    if (this.#stopping !== undefined && trigger === "periodic") return;
    const snap = this.#machine.getSnapshot();
    const state = stateName(snap.value);
    // The machine starts in STOPPED on its way to CONNECTING: that is no news. STOPPED is said once, when the camera stops.
    if (state === "STOPPED" && this.#stopping === undefined) return;
    if (stateEdge) this.#since = this.#clock.wallNow();
    const ctx = snap.context;
    const age = this.#lastFrameTs !== undefined ? (this.#clock.wallNow() - this.#lastFrameTs) / 1000 : undefined;
    const error = this.#error();
    this.#ctx.publishStatus({
      state,
      trigger,
      ...(ctx.stream !== undefined && state === "STREAMING" ? { stream: ctx.stream } : {}),
      ...(this.#lastFrameTs !== undefined ? { last_frame_ts: this.#lastFrameTs } : {}),
      ...(age !== undefined ? { last_frame_age_s: Math.round(age * 1000) / 1000 } : {}),
      publishing: this.#publishing(),
      viewers: this.#totalViewers(),
      ...(error !== undefined ? { error } : {}),
    });
  }

  #publishing(): boolean {
    const value = this.#machine.getSnapshot().value as { STREAMING?: { publish?: string } };
    return value.STREAMING?.publish === "on";
  }

  update(spec: CameraSpec): void {
    const old = this.#spec;
    this.#spec = spec;
    const sourceChanged = spec.url !== old.url || spec.rtsp_transport !== old.rtsp_transport || spec.transcode !== old.transcode || JSON.stringify(spec.ai) !== JSON.stringify(old.ai);
    if (JSON.stringify(spec.ai) !== JSON.stringify(old.ai) || JSON.stringify(spec.solutions) !== JSON.stringify(old.solutions)) this.#startAnalysis();
    if (sourceChanged) {
      // Only the ingest restarts; the WHIP session follows the new stream when it is up.
      this.#machine.send({ type: "RESTART" });
    } else if (publishWanted(spec, this.#demand) !== publishWanted(old, this.#demand)) {
      this.#machine.send({ type: publishWanted(spec, this.#demand) ? "PUBLISH_WANTED" : "PUBLISH_UNWANTED" });
    }
  }

  // ------------------------------------------------------------ viewers (on-demand publishing)

  viewers(report: ViewerReport): number {
    if (this.#stopping !== undefined) return 0;
    if (report.viewers > 0) this.#viewerCounts.set(report.gateway, { viewers: report.viewers, expiresAt: this.#clock.now() + report.ttlMs });
    else this.#viewerCounts.delete(report.gateway);
    this.#onViewersChanged();
    return this.#totalViewers();
  }

  #totalViewers(): number {
    const now = this.#clock.now();
    let total = 0;
    for (const c of this.#viewerCounts.values()) if (c.expiresAt > now) total += c.viewers;
    return total;
  }

  /** Drops expired counts, re-arms the expiry timer, and turns demand on or (after the linger time) off. */
  #onViewersChanged(): void {
    const now = this.#clock.now();
    for (const [gateway, c] of this.#viewerCounts) if (c.expiresAt <= now) this.#viewerCounts.delete(gateway);
    this.#clock.clearTimeout(this.#viewerExpiry);
    this.#viewerExpiry = undefined;
    const next = Math.min(...[...this.#viewerCounts.values()].map((c) => c.expiresAt));
    // A gateway that stops refreshing (it died) must not keep the camera publishing.
    if (Number.isFinite(next)) this.#viewerExpiry = this.#clock.setTimeout(() => this.#onViewersChanged(), Math.max(0, next - now) + 1);

    const watched = this.#totalViewers() > 0;
    if (watched) {
      this.#clock.clearTimeout(this.#linger);
      this.#linger = undefined;
      this.#setDemand(true);
    } else if (this.#demand && this.#linger === undefined) {
      this.#linger = this.#clock.setTimeout(() => {
        this.#linger = undefined;
        if (this.#totalViewers() === 0) this.#setDemand(false);
      }, this.#ctx.config.onDemandLingerMs);
    }
  }

  #setDemand(demand: boolean): void {
    if (demand === this.#demand) return;
    const before = publishWanted(this.#spec, this.#demand);
    this.#demand = demand;
    const after = publishWanted(this.#spec, demand);
    this.#ctx.logger.info({ demand, viewers: this.#totalViewers() }, demand ? "viewers arrived: publishing on demand" : "no viewers for the linger time: publishing stops");
    if (before !== after) this.#machine.send({ type: after ? "PUBLISH_WANTED" : "PUBLISH_UNWANTED" });
  }

  stop(_reason: StopReason): Promise<void> {
    this.#stopping ??= (async () => {
      this.#clock.clearTimeout(this.#summary);
      this.#clock.clearTimeout(this.#viewerExpiry);
      this.#clock.clearTimeout(this.#linger);
      this.#machine.send({ type: "STOP" });
      this.#machine.stop();
      this.#metrics.forget(this.#spec.id, this);
      this.#abort.abort();
      if (this.#analysis !== undefined) this.#track(this.#analysis.stop());
      // Every process and session this actor started is gone when stop resolves.
      while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    })();
    return this.#stopping;
  }

  // ------------------------------------------------------------ snapshots

  /**
   * The latest frame as a JPEG, `width` pixels wide if given (never wider
   * than the source). Decodes the cached GOP on request only; requests for
   * the same width while one decodes share it.
   */
  snapshot(width?: number): Promise<Buffer> {
    if (width !== undefined && (!Number.isInteger(width) || width < SNAPSHOT_WIDTH.min || width > SNAPSHOT_WIDTH.max)) {
      return Promise.reject(new CamfleetError("INVALID_ARGUMENT", `width: must be a whole number of pixels in ${SNAPSHOT_WIDTH.min}..${SNAPSHOT_WIDTH.max}, got ${width}`));
    }
    const key = width ?? 0;
    let decoding = this.#snapshots.get(key);
    if (decoding === undefined) {
      decoding = this.#decodeSnapshot(width).finally(() => this.#snapshots.delete(key));
      this.#snapshots.set(key, decoding);
      this.#track(decoding.catch(() => undefined));
    }
    return decoding;
  }

  async #decodeSnapshot(width: number | undefined): Promise<Buffer> {
    const state = stateName(this.#machine.getSnapshot().value);
    if (this.#stopping !== undefined) throw new CamfleetError("UNAVAILABLE", `camera ${this.#spec.id} is stopping`);
    // Depacketized at once (rtpToAnnexB copies the bytes): the cache's buffer is rewritten by the next packets.
    const { data, frames } = rtpToAnnexB(this.#gop.packets());
    if (state !== "STREAMING" || frames === 0) {
      throw new CamfleetError("UNAVAILABLE", `camera ${this.#spec.id} has no picture yet: it is ${state}${state === "STREAMING" ? " but no key frame has arrived" : ", not streaming"}`);
    }
    this.#metrics.snapshotDecodes.inc();
    return (this.#media.decodeSnapshot ?? ffmpegSnapshot)({
      annexB: data,
      frames,
      ...(width !== undefined ? { width } : {}),
      deadlineMs: SNAPSHOT_DEADLINE_MS,
      signal: this.#abort.signal,
    });
  }

  status(): CameraStatus {
    const snap = this.#machine.getSnapshot();
    const state = stateName(snap.value);
    const ctx = snap.context;
    const error = this.#error();
    const analysis = this.#analysis;
    return {
      camera: this.#spec.id,
      node: this.#ctx.node,
      epoch: this.#ctx.epoch,
      state,
      since_ts: this.#since,
      ...(ctx.stream !== undefined ? { stream: ctx.stream } : {}),
      ...(this.#lastFrameTs !== undefined ? { last_frame_ts: this.#lastFrameTs } : {}),
      frames: {
        received: this.#frames,
        sent_ai: analysis?.counts.sent_ai ?? 0,
        skipped_motion: analysis?.counts.skipped_motion ?? 0,
        detections: analysis?.counts.detections ?? 0,
      },
      ...(analysis?.avgInferenceMs !== undefined ? { avg_inference_ms: analysis.avgInferenceMs } : {}),
      ...(analysis !== undefined && analysis.counts.dropped_events > 0 ? { detections_dropped: analysis.counts.dropped_events } : {}),
      publishing: this.#publishing(),
      viewers: this.#totalViewers(),
      ...(this.#whip !== undefined
        ? { whip: { ...(this.#whip.sessionUrl !== undefined ? { session_url: this.#whip.sessionUrl } : {}), uptime_s: this.#whip.uptimeS() } }
        : {}),
      ...(error !== undefined ? { error } : {}),
    };
  }
}

/** `always` publishes whenever streaming; `on-demand` while a gateway reports viewers (and for the linger time after); `off` never. */
function publishWanted(spec: CameraSpec, demand: boolean): boolean {
  return spec.publish === "always" || (spec.publish === "on-demand" && demand);
}
