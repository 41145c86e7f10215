import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { Subscription } from "@nats-io/transport-node";
import type { Registry } from "prom-client";
import { Counter } from "prom-client";
import {
  BUCKETS,
  detectionMsgId,
  kvKeys,
  STREAMS,
  StatusEventSchema,
  subjects,
  type CameraSpec,
  type CameraState,
  type DetectionEvent,
  type NodeInfo,
  type StatusEvent,
} from "../../subjects/index.ts";
import { ClusterView } from "./cluster-view.ts";
import type { Config } from "../config.ts";
import { describeConfig } from "../config.ts";
import { serveCameraStatus, serveCameraViewers, serveControl } from "./control-server.ts";
import { connectNats, ensureJetStream, retryTransient, startEmbeddedNats, type NatsConnection, type NatsServerProcess } from "../infra/index.ts";
import { BufferedPublisher } from "./event-publisher.ts";
import type { ActorContext, DetectionOutcome, DetectionReport, KindRegistry, StatusReport, StopReason } from "./kinds.ts";
import { LeaseKeeper, leaseTiming, type LeaseLossReason } from "./leases.ts";
import type { Logger } from "../logger.ts";
import { NodeMetrics } from "../metrics.ts";
import { startOpsServer, type OpsServer } from "./ops-http.ts";
import { fairShare, handoverCount, rankCandidates, rendezvousScore, type NodeLoad } from "./placement.ts";
import { ActorSlot, type BackoffPolicy } from "./supervisor.ts";

export interface PlacementTuning {
  /** A node that is the k-th best home for an unowned camera waits k times this before claiming, ms. Default 150. */
  claimStaggerMs: number;
  /** Claims in flight at once per node. Default 64. */
  maxClaimsInFlight: number;
  /** Membership must be unchanged this long before a node hands cameras over to even the load, ms. Default 1500. */
  settleMs: number;
  /** A node does not reclaim a camera it handed over for this long, ms. Default 3000. */
  handoverCooldownMs: number;
  /** Periodic StatusEvent interval while an actor runs, ms. Default 5000. */
  summaryIntervalMs: number;
}

export const DEFAULT_PLACEMENT: PlacementTuning = {
  claimStaggerMs: 150,
  maxClaimsInFlight: 64,
  settleMs: 1500,
  handoverCooldownMs: 3000,
  summaryIntervalMs: 5000,
};

export interface FleetNodeOptions {
  config: Config;
  logger: Logger;
  registry: Registry;
  version: string;
  kinds: KindRegistry;
  placement?: Partial<PlacementTuning>;
  backoff?: BackoffPolicy;
  /** Aborts a start that is still waiting for NATS. */
  signal?: AbortSignal;
  /** Serve /metrics, /healthz, /readyz on HTTP_PORT. Default true; `camfleet up` leaves them to the gateway. */
  opsServer?: boolean;
}

/** How long shutdown waits, in all, for NATS to confirm releases and flush, ms. */
const SHUTDOWN_NATS_DEADLINE_MS = 2000;

/** True when `work` settled within `ms`; never rejects. */
async function settlesWithin(work: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([
    Promise.resolve(work).then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return result;
}

interface Owned {
  slot: ActorSlot;
  specRevision: number;
  statusSub: Subscription;
  viewersSub: Subscription;
}

/**
 * A camfleet node: connects to NATS (embedded when NATS_URL is unset), keeps
 * its heartbeat in camfleet_nodes, claims the cameras it is the best home
 * for through leases in camfleet_leases, runs one supervised actor per owned
 * camera, serves the control subjects, and hands everything over on drain
 * or shutdown.
 */
export class FleetNode {
  readonly id: string;
  readonly metrics: NodeMetrics;
  readonly #options: FleetNodeOptions;
  readonly #tuning: PlacementTuning;
  readonly #timing: ReturnType<typeof leaseTiming>;
  readonly #startedTs = Date.now();
  readonly #owned = new Map<string, Owned>();
  readonly #claiming = new Set<string>();
  /** When this node first saw each enabled camera without a live holder (monotonic ms). */
  readonly #unownedSince = new Map<string, number>();
  /** Cameras this node handed over, and until when it leaves them to others. */
  readonly #cooldown = new Map<string, number>();
  readonly #restarts: Counter<"camera">;
  #nc?: NatsConnection;
  #js?: JetStreamClient;
  #detections?: BufferedPublisher;
  #jsm?: JetStreamManager;
  #embedded?: NatsServerProcess;
  #ops?: OpsServer;
  #view?: ClusterView;
  #leases?: LeaseKeeper;
  #nodesKv?: KV;
  #control?: { stop(): void };
  #timers: NodeJS.Timeout[] = [];
  #ready = false;
  #draining = false;
  #stopping?: Promise<void>;
  #reconcileQueued = false;
  #membership = "";
  #membershipChangedAt = performance.now();
  #lastHandoverAt = 0;

  private constructor(options: FleetNodeOptions) {
    this.#options = options;
    this.id = options.config.nodeId;
    this.#tuning = { ...DEFAULT_PLACEMENT, ...options.placement };
    this.#timing = leaseTiming(options.config.leaseTtlMs);
    this.metrics = new NodeMetrics(options.registry);
    this.metrics.capacity.set(options.config.maxCameras);
    this.#restarts = new Counter({
      name: "camfleet_actor_restarts_total",
      help: "Actors restarted by their supervisor after a failure",
      labelNames: ["camera"],
      registers: [options.registry],
    });
  }

  static async start(options: FleetNodeOptions): Promise<FleetNode> {
    const node = new FleetNode(options);
    try {
      await node.#boot();
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  /** NATS client URLs the node uses (the embedded server's, when there is one). */
  get natsServers(): string[] {
    return this.#embedded !== undefined ? [this.#embedded.url] : (this.#options.config.natsServers ?? []);
  }

  get opsUrl(): string | undefined {
    return this.#ops?.url;
  }

  /** Cameras this node runs now. */
  ownedCameras(): string[] {
    return [...this.#owned.keys()];
  }

  async #boot(): Promise<void> {
    const { config, logger: log } = this.#options;
    const kind = this.#options.kinds.get(config.actorKind); // fail fast on an unknown kind
    log.info({ config: describeConfig(config), version: this.#options.version, actorKind: kind.name }, "starting node");
    if (kind.name === "sim") log.warn("actor kind sim: cameras are simulated, no source is opened");
    // Ops first, so /healthz answers and /readyz explains while NATS comes up.
    if (this.#options.opsServer ?? true) {
      this.#ops = await startOpsServer({
        host: config.httpHost,
        port: config.httpPort,
        registry: this.#options.registry,
        notReadyReason: () => this.#notReadyReason(),
        logger: log,
      });
      log.info({ url: this.#ops.url }, "serving /metrics, /healthz, /readyz");
    }

    if (config.natsServers === undefined) {
      this.#embedded = await startEmbeddedNats({ dataDir: config.dataDir, port: config.embeddedNatsPort, logger: log });
    }
    const nc = await connectNats({
      servers: this.natsServers,
      name: `camfleet-node-${this.id}`,
      logger: log,
      metrics: this.metrics,
      retryFirstConnect: true,
      ...(this.#options.signal !== undefined ? { signal: this.#options.signal } : {}),
    });
    this.#nc = nc;
    const { replicas } = await this.#retryTransient("setting up JetStream streams and buckets", () =>
      ensureJetStream(nc, { ...(config.replicas !== undefined ? { replicas: config.replicas } : {}), detections: config.detectionsStream, logger: log }),
    );
    this.#js = jetstream(nc);
    this.#detections = new BufferedPublisher({
      js: this.#js,
      capacity: config.detectionsBuffer,
      logger: log,
      registry: this.#options.registry,
      metricPrefix: "camfleet_detections",
    });
    this.#jsm = await jetstreamManager(nc);

    const kvm = new Kvm(nc);
    // Lease and heartbeat writes must fail fast: one stuck for the default 5 s
    // outlives the fence, even when NATS came back within moments.
    const fast = { timeout: this.#timing.renewEveryMs };
    const [cameras, leases, nodes] = await Promise.all([kvm.open(BUCKETS.cameras), kvm.open(BUCKETS.leases, fast), kvm.open(BUCKETS.nodes, fast)]);
    this.#nodesKv = nodes;
    this.#leases = new LeaseKeeper({
      kv: leases,
      node: this.id,
      ttlMs: config.leaseTtlMs,
      logger: log,
      metrics: this.metrics,
      onLost: (camera, reason) => this.#leaseLost(camera, reason),
    });
    this.#view = new ClusterView({ cameras, leases, nodes, ttlMs: config.leaseTtlMs, logger: log });
    this.#view.onChange(() => this.#queueReconcile());
    await this.#heartbeat();
    await this.#view.start();

    this.#control = serveControl({
      nc,
      cameras,
      node: this.id,
      allowLocalSources: config.allowLocalSources,
      aiDefaults: { max_fps: config.aiMaxFps, timeout_ms: config.aiTimeoutMs, ...(config.aiEveryN !== undefined ? { every_n: config.aiEveryN } : {}) },
      logger: log,
      metrics: this.metrics,
      lease: (camera) => {
        const view = this.#view;
        return view !== undefined && view.holder(camera) !== undefined ? view.leases.get(camera)?.value : undefined;
      },
      specs: () => [...(this.#view?.cameras.values() ?? [])].map((c) => c.value),
      nodes: () => this.#view?.liveNodes() ?? [],
      state: (spec) => this.#stateOf(spec),
      drain: () => this.drain(),
    });
    void this.#watchConnection(nc);

    this.#leases.start();
    this.#timers.push(setInterval(() => void this.#heartbeat(), this.#timing.renewEveryMs));
    // Ages cross thresholds without any watch event: re-evaluate on a tick too.
    this.#timers.push(setInterval(() => this.#queueReconcile(), Math.max(50, Math.min(250, this.#tuning.claimStaggerMs))));
    // The server has the control subscriptions once this returns: "ready" means requests find a responder.
    await nc.flush();
    this.#ready = true;
    log.info({ replicas, leaseTtlMs: config.leaseTtlMs, capacity: config.maxCameras }, "node ready");
    this.#queueReconcile();
  }

  /** Retries work that fails only because JetStream cannot answer yet (runtime/nats.ts), until the node is stopped. */
  #retryTransient<T>(what: string, work: () => Promise<T>): Promise<T> {
    return retryTransient(what, work, { logger: this.#options.logger, ...(this.#options.signal !== undefined ? { signal: this.#options.signal } : {}) });
  }

  /** Why the node cannot do its job yet, or undefined when it can. */
  notReadyReason(): string | undefined {
    return this.#notReadyReason();
  }

  #notReadyReason(): string | undefined {
    if (this.#nc === undefined) return "connecting to NATS";
    if (this.#nc.isClosed()) return "NATS connection closed";
    if (!this.#ready) return "setting up JetStream streams and buckets";
    return undefined;
  }

  async #watchConnection(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "reconnect") {
        // While cut off this node could not see renewals: judge nobody by that gap.
        this.#view?.reconnected();
        void this.#leases?.renewAll({ force: true });
        void this.#heartbeat();
      }
    }
  }

  async #heartbeat(): Promise<void> {
    if (this.#nodesKv === undefined || this.#stopping !== undefined) return;
    const info: NodeInfo = {
      node: this.id,
      version: this.#options.version,
      started_ts: this.#startedTs,
      heartbeat_ts: Date.now(),
      capacity: this.#options.config.maxCameras,
      cameras: this.#owned.size,
      ...(this.#ops !== undefined ? { http_url: this.#ops.url } : {}),
      ...(this.#draining ? { draining: true } : {}),
    };
    try {
      await this.#nodesKv.put(kvKeys.node(this.id), JSON.stringify(info));
    } catch (err) {
      this.#options.logger.debug({ err }, "heartbeat failed");
    }
  }

  #queueReconcile(): void {
    if (this.#reconcileQueued) return;
    this.#reconcileQueued = true;
    setImmediate(() => {
      this.#reconcileQueued = false;
      this.#reconcile();
    });
  }

  /** Brings what this node runs in line with the specs and the cluster. Synchronous decisions; I/O is started, not awaited. */
  #reconcile(): void {
    const view = this.#view;
    const leases = this.#leases;
    if (view === undefined || leases === undefined || !this.#ready || this.#stopping !== undefined) return;
    const now = performance.now();

    // 1. What we run against what is wanted.
    for (const [camera, owned] of this.#owned) {
      const spec = view.cameras.get(camera);
      if (spec === undefined) void this.#release(camera, "deleted");
      else if (!spec.value.enabled) void this.#release(camera, "disabled");
      else if (spec.revision !== owned.specRevision) {
        owned.specRevision = spec.revision;
        void owned.slot.update(spec.value);
      }
    }
    if (this.#draining) return;

    // 2. Load of every live node that takes cameras.
    const loads = this.#loads();
    const ids = loads.map((l) => l.node).sort().join(",");
    if (ids !== this.#membership) {
      this.#membership = ids;
      this.#membershipChangedAt = now;
    }
    const enabled = [...view.cameras.values()].filter((c) => c.value.enabled);
    const shares = fairShare(enabled.length, loads);
    const me = loads.find((l) => l.node === this.id);
    if (me === undefined) return;

    // 3. Claim unowned cameras this node is the best home for; the others wait their turn.
    let unowned = 0;
    for (const { value: spec } of enabled) {
      const camera = spec.id;
      if (this.#owned.has(camera) || this.#claiming.has(camera)) continue;
      if (view.holder(camera) !== undefined) {
        this.#unownedSince.delete(camera);
        continue;
      }
      unowned++;
      const since = this.#unownedSince.get(camera) ?? now;
      this.#unownedSince.set(camera, since);
      const cooldownUntil = this.#cooldown.get(camera);
      if (cooldownUntil !== undefined && now < cooldownUntil) continue;
      const rank = rankCandidates(camera, loads, shares).indexOf(this.id);
      if (rank < 0 || now - since < rank * this.#tuning.claimStaggerMs) continue;
      if (this.#claiming.size >= this.#tuning.maxClaimsInFlight) break;
      const lease = view.leases.get(camera);
      me.count++; // later decisions this round see the claim
      void this.#claim(spec, lease?.revision);
    }
    for (const camera of this.#unownedSince.keys()) {
      if (!view.cameras.get(camera)?.value.enabled) this.#unownedSince.delete(camera);
    }

    // 4. Even the load out once the cluster is settled: hand over, never grab.
    if (unowned === 0 && this.#claiming.size === 0 && now - this.#membershipChangedAt >= this.#tuning.settleMs && now - this.#lastHandoverAt >= this.#tuning.settleMs) {
      const n = handoverCount(this.id, loads, shares);
      if (n > 0) {
        this.#lastHandoverAt = now;
        const weakest = [...this.#owned.keys()].sort((a, b) => rendezvousScore(a, this.id, 1) - rendezvousScore(b, this.id, 1)).slice(0, n);
        this.#options.logger.info({ cameras: weakest, count: this.#owned.size }, "handing cameras over to even the load");
        for (const camera of weakest) {
          this.#cooldown.set(camera, now + this.#tuning.handoverCooldownMs);
          void this.#release(camera, "released");
        }
      }
    }
    for (const [camera, until] of this.#cooldown) if (now >= until) this.#cooldown.delete(camera);
  }

  /** Live, non-draining nodes with the cameras each holds (by unexpired leases; ours from memory). */
  #loads(): NodeLoad[] {
    const view = this.#view!;
    const counts = new Map<string, number>();
    for (const [camera, lease] of view.leases) {
      if (!view.leaseExpired(camera)) counts.set(lease.value.node, (counts.get(lease.value.node) ?? 0) + 1);
    }
    const loads: NodeLoad[] = [];
    for (const info of view.liveNodes()) {
      if (info.draining === true || info.node === this.id) continue;
      loads.push({ node: info.node, capacity: info.capacity, count: counts.get(info.node) ?? 0 });
    }
    loads.push({ node: this.id, capacity: this.#options.config.maxCameras, count: this.#owned.size + this.#claiming.size });
    return loads;
  }

  async #claim(spec: CameraSpec, takeoverRevision: number | undefined): Promise<void> {
    const camera = spec.id;
    const log = this.#options.logger.child({ camera });
    this.#claiming.add(camera);
    try {
      const lease = await this.#leases!.claim(camera, takeoverRevision);
      if (lease === undefined) {
        // Another node won, or our copy of the lease is stale (its watch lagged): re-read it.
        if (takeoverRevision !== undefined) await this.#view?.refreshLease(camera).catch(() => undefined);
        return;
      }
      const current = this.#view?.cameras.get(camera);
      if (this.#stopping !== undefined || this.#draining || current === undefined || !current.value.enabled) {
        await this.#leases!.release(camera);
        return;
      }
      this.#unownedSince.delete(camera);
      log.info({ epoch: lease.epoch, takeover: takeoverRevision !== undefined }, "claimed camera");
      this.#run(current.value, current.revision, lease.epoch);
    } catch (err) {
      log.debug({ err }, "claim failed");
    } finally {
      this.#claiming.delete(camera);
      this.metrics.camerasOwned.set(this.#owned.size);
      this.#queueReconcile();
    }
  }

  #run(spec: CameraSpec, specRevision: number, epoch: number): void {
    const camera = spec.id;
    const log = this.#options.logger.child({ camera });
    const kind = this.#options.kinds.get(this.#options.config.actorKind);
    const slot: ActorSlot = new ActorSlot({
      kind,
      spec,
      epoch,
      node: this.id,
      logger: log,
      ...(this.#options.backoff !== undefined ? { backoff: this.#options.backoff } : {}),
      context: (current, fail) => this.#context(current, epoch, log, fail),
      report: (report) => this.#publishStatus(slot.spec, epoch, report),
      onRestart: () => this.#restarts.inc({ camera }),
    });
    const statusSub = serveCameraStatus(this.#nc!, camera, () => slot.status(), log);
    const viewersSub = serveCameraViewers(this.#nc!, camera, (report) => slot.viewers(report), log);
    this.#owned.set(camera, { slot, specRevision, statusSub, viewersSub });
    this.metrics.camerasOwned.set(this.#owned.size);
    slot.start();
  }

  #context(spec: CameraSpec, epoch: number, logger: Logger, fail: (err: unknown) => void): ActorContext {
    return {
      spec,
      node: this.id,
      epoch,
      logger,
      registry: this.#options.registry,
      config: this.#options.config,
      summaryIntervalMs: this.#tuning.summaryIntervalMs,
      publishStatus: (report) => this.#publishStatus(spec, epoch, report),
      publishDetection: (report) => this.#publishDetection(spec, epoch, report),
      fail,
    };
  }

  /** True while this node's lease on the camera, at this epoch, is valid: only then may it speak for the camera. */
  #holds(camera: string, epoch: number): boolean {
    const leases = this.#leases;
    if (leases === undefined) return false;
    const held = leases.get(camera);
    return held !== undefined && held.epoch === epoch && leases.isValid(camera);
  }

  /** Who speaks and when: the fields the runtime stamps on every event. */
  #origin(spec: CameraSpec, epoch: number) {
    return { camera: spec.id, tenant: spec.tenant, site: spec.site, node: this.id, epoch, ts: Date.now() };
  }

  /** Stamps a DetectionEvent and hands it to the buffered publisher, unless fenced. */
  #publishDetection(spec: CameraSpec, epoch: number, report: DetectionReport): DetectionOutcome {
    const publisher = this.#detections;
    if (publisher === undefined || !this.#holds(spec.id, epoch)) return "fenced";
    const id = detectionMsgId(spec.id, epoch, report.frame_id);
    const event: DetectionEvent = { type: "detection", id, ...this.#origin(spec, epoch), ...report };
    return publisher.publish(subjects.detections(spec.id, spec.tenant, spec.site), JSON.stringify(event), id);
  }

  /** Stamps and publishes a StatusEvent, unless this node's lease no longer covers it (fencing). */
  #publishStatus(spec: CameraSpec, epoch: number, report: StatusReport): void {
    const js = this.#js;
    if (js === undefined || !this.#holds(spec.id, epoch)) return;
    const event: StatusEvent = { type: "status", ...this.#origin(spec, epoch), ...report };
    js.publish(subjects.status(spec.id, spec.tenant, spec.site), JSON.stringify(event)).catch((err: unknown) => {
      this.#options.logger.debug({ camera: spec.id, err }, "status publish failed");
    });
  }

  async #stateOf(spec: CameraSpec): Promise<CameraState | undefined> {
    const mine = this.#owned.get(spec.id);
    if (mine !== undefined) return mine.slot.status().state;
    const msg = await this.#jsm?.streams.getMessage(STREAMS.status, { last_by_subj: subjects.status(spec.id, spec.tenant, spec.site) });
    if (msg === undefined || msg === null) return undefined;
    const parsed = StatusEventSchema.safeParse(msg.json());
    return parsed.success ? parsed.data.state : undefined;
  }

  #leaseLost(camera: string, reason: LeaseLossReason): void {
    const owned = this.#owned.get(camera);
    if (owned === undefined) return;
    this.#owned.delete(camera);
    owned.statusSub.unsubscribe();
    owned.viewersSub.unsubscribe();
    this.metrics.camerasOwned.set(this.#owned.size);
    this.#options.logger.warn({ camera, reason, epoch: owned.slot.epoch }, "lease lost; stopped actor (self-fencing)");
    void owned.slot.stop("lease-lost");
    this.#queueReconcile();
  }

  /** Stops a camera's actor, then gives its lease up. */
  async #release(camera: string, reason: StopReason): Promise<void> {
    const owned = this.#owned.get(camera);
    if (owned === undefined) return;
    this.#owned.delete(camera);
    owned.statusSub.unsubscribe();
    owned.viewersSub.unsubscribe();
    await owned.slot.stop(reason);
    await this.#leases?.release(camera);
    this.metrics.camerasOwned.set(this.#owned.size);
    this.#options.logger.info({ camera, reason }, "released camera");
    this.#queueReconcile();
  }

  /** Hands every camera over and claims no more. Resolves with how many were released. */
  async drain(): Promise<number> {
    this.#draining = true;
    await this.#heartbeat(); // others stop counting on us before the cameras come free
    const cameras = [...this.#owned.keys()];
    await Promise.all(cameras.map((camera) => this.#release(camera, "released")));
    this.#options.logger.info({ released: cameras.length }, "drained");
    return cameras.length;
  }

  /** Hands cameras over and stops everything this node started, in reverse order. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const log = this.#options.logger;
      for (const t of this.#timers) clearInterval(t);
      this.#control?.stop();
      const owned = [...this.#owned.entries()];
      const cameras = owned.map(([camera]) => camera);
      const released = Promise.all(cameras.map((camera) => this.#release(camera, "shutdown")));
      // Actors stop for sure, NATS or not.
      await Promise.all(owned.map(([, o]) => o.slot.stop("shutdown")));
      // Nothing more to watch or renew: the watches would only see the connection close.
      this.#view?.stop();
      // Telling the cluster (lease deletes, heartbeat delete, flush) gets one deadline
      // in all: a lease we could not delete simply expires.
      const told = (async () => {
        await released;
        // Detections the actors published before they stopped reach JetStream if NATS lets them.
        const left = await this.#detections?.flush(SHUTDOWN_NATS_DEADLINE_MS / 2);
        if (left === false) log.warn({ pending: this.#detections?.pending }, "detections still unacknowledged at shutdown; given up");
        this.#detections?.stop();
        await this.#nodesKv?.delete(kvKeys.node(this.id)).catch(() => undefined);
        if (this.#nc !== undefined && !this.#nc.isClosed()) {
          // drain: finish in-flight handlers and flush publishes before closing.
          await this.#nc.drain().catch((err: unknown) => log.warn({ err }, "draining the NATS connection failed"));
        }
      })();
      if (!(await settlesWithin(told, SHUTDOWN_NATS_DEADLINE_MS))) {
        log.warn("NATS did not confirm the shutdown in time; unreleased leases will expire");
        await this.#nc?.close().catch(() => undefined);
      }
      if (cameras.length > 0) log.info({ released: cameras.length }, "released cameras for shutdown");
      this.#leases?.stop();
      await this.#ops?.close();
      if (this.#embedded !== undefined) {
        await this.#embedded.stop();
        log.info("embedded nats-server stopped");
      }
      log.info("node stopped");
    })();
    return this.#stopping;
  }
}
