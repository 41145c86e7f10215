import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { Subscription } from "@nats-io/transport-node";
import type { Registry } from "prom-client";
import { Counter } from "prom-client";
import {
  BUCKETS,
  detectionMsgId,
  kvKeys,
  RelaySchema,
  STREAMS,
  StatusEventSchema,
  subjects,
  type CameraSpec,
  type CameraState,
  type DetectionEvent,
  type NodeInfo,
  type OwnerChangeReason,
  type StatusEvent,
} from "../../subjects/index.ts";
import { ClusterView } from "./cluster-view.ts";
import type { Config } from "../config.ts";
import { describeConfig } from "../config.ts";
import { serveCameraSnapshot, serveCameraStatus, serveCameraViewers, serveControl } from "./control-server.ts";
import { connectNats, ensureJetStream, isTransientNatsError, jetStreamOptions, openKvWithTimeout, retryTransient, startEmbeddedNats, type NatsConnection, type NatsServerProcess } from "../infra/index.ts";
import { every, realClock, sleep, type Clock, type Repeating, type Timer } from "../clock.ts";
import { timedOut, withTimeout } from "../deadline.ts";
import { BufferedPublisher } from "./event-publisher.ts";
import type { ActorContext, DetectionOutcome, DetectionReport, KindRegistry, StatusReport, StopReason } from "./kinds.ts";
import { LeaseKeeper, leaseTiming, type LeaseLossReason, type OwnedLease } from "./leases.ts";
import { LOG_MESSAGES } from "../log-messages.ts";
import type { Logger } from "../logger.ts";
import { NodeMetrics } from "../metrics.ts";
import { startOpsServer, type OpsServer } from "./ops-http.ts";
import { DEFAULT_PLACEMENT, initialMemory, reconcile, type PlacementMemory, type PlacementTuning, type ReconcileDecision } from "./reconcile.ts";
import { ActorSlot, type BackoffPolicy } from "./supervisor.ts";
import { probePresence, servePresence } from "./presence.ts";
import { RouteWitness } from "./witness.ts";


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
  /** Time for every decision the node and its parts make. Default realClock. */
  clock?: Clock;
}

/** How long shutdown waits, in all, for NATS to confirm releases and flush, ms. */
const SHUTDOWN_NATS_DEADLINE_MS = 2000;
/** Status events a node keeps while NATS is away, waiting or awaiting their ack. */
const STATUS_BUFFER = 2000;
/** A periodic summary is not queued behind this many events (NATS away): the next one says the same, fresher, and edges keep the room. */
const PERIODIC_BACKLOG = 100;
/** How long a claim of a free camera waits for the camera's last StatusEvent (who had it, and why it left), ms. */
const PREVIOUS_OWNER_LOOKUP_MS = 500;
/** What one outage proof saw: servers reached of those needed, whether the route witness answered, the peers' presence. */
interface ProofSeen {
  at: number;
  servers: number;
  need: number;
  witnessed: boolean;
  peers: string;
}

/** After a claim NATS could not take (not a lost race), ms before the camera is tried again. */
const CLAIM_RETRY_MS = 100;

/** Nats-Msg-Id of a StatusEvent: a retry after a lost ack is stored once. */
function statusMsgId(camera: string, epoch: number, seq: number): string {
  return `${camera}:${epoch}:s${seq}`;
}

/** Who had a camera before this node and why it moved: stamped on the first StatusEvent of the new epoch. */
interface Move {
  epoch: number;
  previous_node: string;
  reason?: OwnerChangeReason;
}


interface Owned {
  slot: ActorSlot;
  specRevision: number;
  statusSub: Subscription;
  viewersSub: Subscription;
  snapshotSub: Subscription;
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
  readonly #clock: Clock;
  readonly #startedTs: number;
  readonly #owned = new Map<string, Owned>();
  /** The state each camera's last StatusEvent from here said, so a stop adds STOPPED only when the actor did not. */
  readonly #lastState = new Map<string, { epoch: number; state: CameraState }>();
  readonly #frameIds = new Map<string, { epoch: number; next: number }>();
  /** Per camera: the next status msg-id sequence at its epoch. */
  readonly #statusSeq = new Map<string, { epoch: number; next: number }>();
  /** Moves not yet announced: the first StatusEvent of that epoch names the previous owner. */
  readonly #moves = new Map<string, Move>();
  /** Cameras being handed over, and why: their STOPPED says it (the marker the new owner reads). */
  readonly #handingOver = new Map<string, OwnerChangeReason>();
  readonly #claiming = new Set<string>();
  /** What reconcile rounds carry from one to the next (stagger starts, cooldowns, membership). */
  #memory: PlacementMemory;
  /** Runs the next round when the last one said a decision is due, events or not. */
  #wakeTimer?: Timer;
  readonly #restarts: Counter<"camera">;
  #nc?: NatsConnection;
  #js?: JetStreamClient;
  #detections?: BufferedPublisher;
  /** StatusEvents, in order (one in flight), kept and retried while NATS is away. */
  #statusEvents?: BufferedPublisher;
  #jsm?: JetStreamManager;
  #embedded?: NatsServerProcess;
  #ops?: OpsServer;
  #view?: ClusterView;
  #leases?: LeaseKeeper;
  #nodesKv?: KV;
  /** camfleet_relays: which gateway holds a camera's relay (trustsOrigin). */
  #relaysKv?: KV;
  #control?: { stop(): Promise<void> };
  #timers: Repeating[] = [];
  #ready = false;
  #draining = false;
  #stopping?: Promise<void>;
  #reconcileQueued = false;
  /** This node's last KV write (heartbeat or renewal) failed: others' ages restart once one works again. */
  #kvFailing = false;
  /** Nodes with a presence probe in flight. */
  readonly #probing = new Set<string>();
  /** Dead nodes whose heartbeat delete is in flight. */
  readonly #forgetting = new Set<string>();
  /** The most NATS servers this node has known the cluster to have (never shrinks: a cut-off minority must not think itself the whole). */
  #clusterSize = 1;
  /** What the latest outage proof that had to ask saw (logged with a fence, so a fence through an election explains itself). */
  #lastProof?: ProofSeen;
  /** This node's second connection, on another server: the outage proof's own evidence (runtime/node/witness.ts). */
  #witness?: RouteWitness;

  private constructor(options: FleetNodeOptions) {
    this.#options = options;
    this.id = options.config.nodeId;
    this.#tuning = { ...DEFAULT_PLACEMENT, ...options.placement };
    this.#timing = leaseTiming(options.config.leaseTtlMs);
    this.#clock = options.clock ?? realClock;
    this.#startedTs = this.#clock.wallNow();
    this.#memory = initialMemory(this.#clock.now());
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
        drain: () => this.drain(),
        ...(config.apiToken !== undefined ? { apiToken: config.apiToken } : {}),
      });
      log.info({ url: this.#ops.url }, LOG_MESSAGES.servingOps);
    }

    if (config.natsServers === undefined) {
      if (config.natsAuth.method !== "none" || config.natsAuth.tls !== undefined) {
        log.warn("NATS credentials or TLS are set but NATS_URL is not: the embedded nats-server has no auth and listens on 127.0.0.1 only; they are not used");
      }
      this.#embedded = await startEmbeddedNats({ dataDir: config.dataDir, port: config.embeddedNatsPort, logger: log });
    }
    const nc = await connectNats({
      servers: this.natsServers,
      // The embedded server has no auth; a NATS_URL server gets NATS_USER … NATS_KEY.
      ...(this.#embedded === undefined ? { auth: config.natsAuth } : {}),
      name: `camfleet-node-${this.id}`,
      logger: log,
      metrics: this.metrics,
      retryFirstConnect: true,
      ...(this.#options.signal !== undefined ? { signal: this.#options.signal } : {}),
    });
    this.#nc = nc;
    servePresence(nc, this.id, log);
    if (this.#embedded === undefined) {
      this.#witness = new RouteWitness({
        node: this.id,
        servers: this.natsServers,
        logger: log,
        // Quiet: its state changes are the witness's own debug lines, not the node's connection story.
        connect: (servers, signal) =>
          connectNats({
            servers,
            auth: config.natsAuth,
            name: `camfleet-node-${this.id}-witness`,
            logger: log.child({ connection: "witness" }, { level: "error" }),
            retryFirstConnect: true,
            ignoreClusterUpdates: true,
            signal,
          }),
      });
      this.#witness.follow(nc);
    }
    const { replicas } = await this.#retryTransient("setting up JetStream streams and buckets", () =>
      ensureJetStream(nc, jetStreamOptions(config, log)),
    );
    this.#js = jetstream(nc);
    this.#detections = new BufferedPublisher({
      js: this.#js,
      capacity: config.detectionsBuffer,
      logger: log,
      registry: this.#options.registry,
      metricPrefix: "camfleet_detections",
      clock: this.#clock,
    });
    this.#statusEvents = new BufferedPublisher({
      js: this.#js,
      capacity: STATUS_BUFFER,
      // One at a time: a camera's events are stored in the order they happened, retries included.
      window: 1,
      logger: log,
      registry: this.#options.registry,
      metricPrefix: "camfleet_status",
      clock: this.#clock,
    });
    this.#jsm = await jetstreamManager(nc);

    const kvm = new Kvm(nc);
    // Lease and heartbeat writes must fail fast: one stuck for the default 5 s
    // outlives the fence (and blocks the lease's next renewal), even when NATS
    // came back within moments.
    const fast = this.#timing.renewEveryMs;
    const [cameras, leases, nodes, relays] = await Promise.all([
      kvm.open(BUCKETS.cameras),
      openKvWithTimeout(nc, BUCKETS.leases, fast),
      openKvWithTimeout(nc, BUCKETS.nodes, fast),
      kvm.open(BUCKETS.relays),
    ]);
    this.#nodesKv = nodes;
    this.#relaysKv = relays;
    this.#leases = new LeaseKeeper({
      kv: leases,
      node: this.id,
      ttlMs: config.leaseTtlMs,
      logger: log,
      metrics: this.metrics,
      onLost: (camera, reason, lease) => this.#leaseLost(camera, reason, lease),
      outageProof: () => this.#outageProof(),
      onKvWrite: (ok) => this.#kvWrite(ok, "leases"),
      clock: this.#clock,
    });
    this.#view = new ClusterView({ cameras, leases, nodes, ttlMs: config.leaseTtlMs, logger: log, clock: this.#clock });
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
    this.#timers.push(every(this.#clock, this.#timing.renewEveryMs, () => void this.#heartbeat()));
    // Each round schedules its own next wake; this tick is only the safety net under it.
    this.#timers.push(every(this.#clock, Math.max(50, Math.min(250, this.#tuning.claimStaggerMs)), () => this.#queueReconcile()));
    // The server has the control subscriptions once this returns: "ready" means requests find a responder.
    await nc.flush();
    this.#ready = true;
    log.info({ replicas, leaseTtlMs: config.leaseTtlMs, capacity: config.maxCameras }, LOG_MESSAGES.nodeReady);
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
        this.#witness?.follow(nc);
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
      heartbeat_ts: this.#clock.wallNow(),
      capacity: this.#options.config.maxCameras,
      cameras: this.#owned.size,
      ...(this.#ops !== undefined ? { http_url: this.#ops.url } : {}),
      ...(this.#draining ? { draining: true } : {}),
      ...this.#usage(),
    };
    try {
      await this.#nodesKv.put(kvKeys.node(this.id), JSON.stringify(info));
      this.#kvWrite(true, "nodes");
    } catch (err) {
      this.#kvWrite(false, "nodes");
      this.#options.logger.debug({ err }, "heartbeat failed");
    }
  }

  /**
   * KV health as this node's own writes see it. While they fail, nobody else
   * could renew either (or we cannot see them do it): no age grows, and once
   * a lease write works again (or the view sees the leases stream led again),
   * every lease and heartbeat age restarts (docs/architecture.md).
   */
  #kvWrite(ok: boolean, bucket: "leases" | "nodes"): void {
    if (!ok) {
      this.#kvFailing = true;
      this.#view?.kvFailed();
      return;
    }
    // Only a lease write ends it: heartbeats may work while the leases bucket is still leaderless.
    if (this.#kvFailing && bucket === "leases") {
      this.#kvFailing = false;
      this.#view?.kvRegained();
      this.#options.logger.debug("KV writes work again; lease ages restart");
    }
  }

  #troubleSummary(lease: Readonly<OwnedLease>): Record<string, unknown> {
    const trouble = this.#leases?.trouble();
    const now = this.#clock.now();
    return {
      ...(trouble !== undefined ? { renewalErrors: trouble.errors, failingForMs: Math.round(now - trouble.since), held: trouble.held } : {}),
      ...(lease.outageHeldAt !== undefined ? { outageHeldAgoMs: Math.round(now - lease.outageHeldAt) } : {}),
    };
  }

  #proofSummary({ at, ...seen }: ProofSeen): Record<string, unknown> {
    return { ...seen, agoMs: Math.round(this.#clock.now() - at) };
  }

  /** Servers of the cluster as the connection knows them, remembered at their most. */
  #knownClusterSize(): number {
    const urls = this.#nc?.info?.connect_urls?.length ?? 0;
    this.#clusterSize = Math.max(this.#clusterSize, urls, this.#options.config.natsServers?.length ?? 1);
    return this.#clusterSize;
  }

  /**
   * Proof that our NATS server is in the cluster's majority: our route
   * witness (our own second connection, on another server) and the other
   * nodes that answer their presence probes are, with us, connected to more
   * than half of the servers the cluster has had. A renewal that found no stream
   * leader from inside the majority means no leader exists anywhere, so
   * nobody can take a lease over (docs/architecture.md).
   */
  async #outageProof(): Promise<boolean> {
    const nc = this.#nc;
    const own = nc?.info?.server_id;
    if (nc === undefined || own === undefined || nc.isClosed()) return false;
    const need = Math.floor(this.#knownClusterSize() / 2) + 1;
    const servers = new Set([own]);
    if (servers.size >= need) return true;
    const timeout = this.#timing.renewEveryMs / 2;
    const peers = [...(this.#view?.nodes.keys() ?? [])].filter((n) => n !== this.id);
    const [witnessed, answers] = await Promise.all([this.#witness?.probe(nc, timeout), Promise.all(peers.map((peer) => probePresence(nc, peer, timeout)))]);
    if (witnessed !== undefined) servers.add(witnessed);
    for (const a of answers) if (a.state === "present" && a.server !== undefined) servers.add(a.server);
    this.#lastProof = { at: this.#clock.now(), servers: servers.size, need, witnessed: witnessed !== undefined, peers: answers.map((a) => a.state).join(",") };
    this.#options.logger.debug({ servers: [...servers], need, witnessed: witnessed !== undefined, peers: answers.map((a) => a.state) }, "outage proof");
    return servers.size >= need;
  }

  /**
   * Probes nodes whose heartbeat is a renewal or more late: one whose
   * presence subject has no responder is gone from the cluster, and its
   * leases expire past its own fence instead of after the full TTL.
   */
  #probeLateNodes(view: ClusterView): void {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return;
    for (const [node, info] of view.nodes) {
      if (node === this.id || this.#probing.has(node) || view.age(info) < 2 * this.#timing.renewEveryMs) continue;
      this.#probing.add(node);
      const sentAt = this.#clock.now();
      void probePresence(nc, node, this.#timing.renewEveryMs).then((p) => {
        this.#probing.delete(node);
        if (p.state === "gone") {
          view.markGone(node, sentAt);
          this.#queueReconcile();
        } else if (p.state === "present") view.markPresent(node);
      });
    }
  }

  /**
   * Deletes the heartbeat of a node this node has seen unchanged for two
   * TTLs of healthy time (revision-checked: a heartbeat written since stays).
   * A killed node leaves its heartbeat behind, and any restart of the ages
   * (a reconnect, an election) would make it look alive again for a TTL:
   * measured, a live node then counted four nodes instead of three and
   * handed a camera over in the middle of a leases election.
   */
  #forgetDeadNodes(view: ClusterView): void {
    const kv = this.#nodesKv;
    if (kv === undefined) return;
    for (const [node, info] of view.nodes) {
      if (node === this.id || this.#forgetting.has(node) || view.age(info) < 2 * this.#options.config.leaseTtlMs) continue;
      this.#forgetting.add(node);
      void kv
        .delete(kvKeys.node(node), { previousSeq: info.revision })
        .then(() => this.#options.logger.info({ gone: node }, "forgot a dead node's heartbeat"))
        .catch((err: unknown) => this.#options.logger.debug({ gone: node, err }, "forgetting a dead node's heartbeat failed (it was renewed, or NATS is away)"))
        .finally(() => this.#forgetting.delete(node));
    }
  }

  #lastCpu: { at: number; usage: NodeJS.CpuUsage } | undefined;

  /** CPU since the previous heartbeat (% of one core) and resident memory, for /system/stats. */
  #usage(): { cpu_percent?: number; rss_bytes: number } {
    const now = performance.now();
    const usage = process.cpuUsage();
    const last = this.#lastCpu;
    this.#lastCpu = { at: now, usage };
    const rss = process.memoryUsage.rss();
    if (last === undefined || now - last.at <= 0) return { rss_bytes: rss };
    const usedUs = usage.user - last.usage.user + (usage.system - last.usage.system);
    return { cpu_percent: Math.round((usedUs / 1000 / (now - last.at)) * 1000) / 10, rss_bytes: rss };
  }

  #queueReconcile(): void {
    if (this.#reconcileQueued) return;
    this.#reconcileQueued = true;
    setImmediate(() => {
      this.#reconcileQueued = false;
      this.#reconcile();
    });
  }

  /** Brings what this node runs in line with the specs and the cluster: reconcile() decides, this applies. I/O is started, not awaited. */
  #reconcile(): void {
    const view = this.#view;
    if (view === undefined || this.#leases === undefined || !this.#ready || this.#stopping !== undefined) return;
    const owned = new Map<string, number>();
    for (const [camera, o] of this.#owned) owned.set(camera, o.specRevision);
    this.#probeLateNodes(view);
    this.#forgetDeadNodes(view);
    const decision = reconcile({
      // A probe result is good for one renewal period; late nodes are probed again each round.
      view: view.snapshot({ gone: view.goneNodes(this.#timing.renewEveryMs), fastTakeoverMs: this.#timing.fastTakeoverAfterMs }),
      self: { id: this.id, capacity: this.#options.config.maxCameras, draining: this.#draining, owned, claiming: this.#claiming },
      memory: this.#memory,
      tuning: this.#tuning,
      now: this.#clock.now(),
    });
    this.#memory = decision.memory;
    for (const { camera, revision } of decision.updates) {
      const mine = this.#owned.get(camera);
      const spec = view.cameras.get(camera);
      if (mine === undefined || spec === undefined) continue;
      mine.specRevision = revision;
      void mine.slot.update(spec.value);
    }
    for (const { camera, reason } of decision.releases) void this.#release(camera, reason);
    for (const claim of decision.claims) {
      const spec = view.cameras.get(claim.camera);
      if (spec !== undefined) void this.#claim(spec.value, claim);
    }
    if (decision.handovers.length > 0) {
      this.#options.logger.info({ cameras: decision.handovers, count: this.#owned.size }, LOG_MESSAGES.handingOver);
      for (const camera of decision.handovers) void this.#release(camera, "released");
    }
    this.#clock.clearTimeout(this.#wakeTimer);
    this.#wakeTimer = undefined;
    if (decision.wakeAt !== undefined) {
      // Rounded up so the round runs at or after the moment, never a hair before it.
      this.#wakeTimer = this.#clock.setTimeout(() => this.#queueReconcile(), Math.max(1, Math.ceil(decision.wakeAt - this.#clock.now())));
    }
  }

  /** `claim.leaseAgeMs` and `claim.expiry`: how this node judged the lease it takes over expired (logged with the claim). */
  async #claim(spec: CameraSpec, claim: ReconcileDecision["claims"][number]): Promise<void> {
    const { takeoverRevision, leaseAgeMs, expiry } = claim;
    const camera = spec.id;
    const log = this.#options.logger.child({ camera });
    this.#claiming.add(camera);
    // The holder of the lease we take over: that camera fails over from it.
    const takenFrom = takeoverRevision !== undefined ? this.#view?.leases.get(camera)?.value.node : undefined;
    try {
      // A takeover trusts this node's ages: not if the leases stream changed leader unseen.
      if (takeoverRevision !== undefined && this.#view !== undefined && !(await this.#view.leasesLeaderUnchanged())) {
        log.debug("leases stream changed leader (or did not answer) since this node last looked; ages restart, takeover waits");
        return;
      }
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
      log.info(
        {
          epoch: lease.epoch,
          takeover: takeoverRevision !== undefined,
          ...(takeoverRevision !== undefined ? { takeoverRevision, leaseAgeMs: Math.round(leaseAgeMs ?? 0) } : {}),
          ...(expiry !== undefined
            ? { expiredBy: expiry.lifetimeMs < this.#timing.takeoverAfterMs ? "holder gone" : "ttl", holderGone: expiry.holderGone, agesRestartedAgoMs: Math.round(expiry.agesRestartedAgoMs) }
            : {}),
        },
        LOG_MESSAGES.claimedCamera,
      );
      const move = takeoverRevision !== undefined ? (takenFrom !== undefined ? { previous_node: takenFrom, reason: "failover" as const } : undefined) : await this.#previousOwner(current.value);
      if (move !== undefined && move.previous_node !== this.id) this.#moves.set(camera, { epoch: lease.epoch, ...move });
      this.#run(current.value, current.revision, lease.epoch);
    } catch (err) {
      const transient = isTransientNatsError(err);
      if (transient) this.#kvWrite(false, "leases");
      log[transient ? "debug" : "warn"]({ err }, LOG_MESSAGES.claimFailed);
      // NATS could not take the write (an election, a reconnect): the camera stays
      // "being claimed" a little longer, so the next round does not retry it at once
      // (measured: every ~5 ms through a 5 s leases election, per camera and node).
      await sleep(this.#clock, CLAIM_RETRY_MS);
    } finally {
      this.#claiming.delete(camera);
      this.metrics.camerasOwned.set(this.#owned.size);
      this.#queueReconcile();
    }
  }

  /**
   * Who had a camera this node claimed free, from its last StatusEvent: a
   * STOPPED with a reason is a handover (drain, rebalance); another last
   * word means its owner went without one (failover); a STOPPED without a
   * reason (disabled, deleted) is no move. Bounded: a slow stream only costs
   * the announcement, never the claim.
   */
  async #previousOwner(spec: CameraSpec): Promise<Omit<Move, "epoch"> | undefined> {
    const jsm = this.#jsm;
    if (jsm === undefined) return undefined;
    const lookup = jsm.streams.getMessage(STREAMS.status, { last_by_subj: subjects.status(spec.id, spec.tenant, spec.site) }).catch(() => null);
    const msg = await withTimeout(lookup, PREVIOUS_OWNER_LOOKUP_MS, this.#clock);
    if (msg === timedOut || msg === null) return undefined;
    const last = StatusEventSchema.safeParse(msg.json());
    if (!last.success || last.data.node === this.id) return undefined;
    if (last.data.state !== "STOPPED") return { previous_node: last.data.node, reason: "failover" };
    return last.data.reason !== undefined ? { previous_node: last.data.node, reason: last.data.reason } : undefined;
  }

  #nextStatusSeq(camera: string, epoch: number): number {
    const seq = this.#statusSeq.get(camera);
    if (seq === undefined || seq.epoch !== epoch) {
      this.#statusSeq.set(camera, { epoch, next: 1 });
      return 0;
    }
    return seq.next++;
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
      clock: this.#clock,
      context: (current, fail) => this.#context(current, epoch, log, fail),
      report: (report) => void this.#publishStatus(slot.spec, epoch, report),
      onRestart: () => this.#restarts.inc({ camera }),
    });
    const statusSub = serveCameraStatus(this.#nc!, camera, () => slot.status(), log);
    const viewersSub = serveCameraViewers(this.#nc!, camera, (report) => slot.viewers(report), log);
    const snapshotSub = serveCameraSnapshot(this.#nc!, camera, (width) => slot.snapshot(width), { logger: log, metrics: this.metrics });
    this.#owned.set(camera, { slot, specRevision, statusSub, viewersSub, snapshotSub });
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
      publishStatus: (report) => void this.#publishStatus(spec, epoch, report),
      publishDetection: (report) => this.#publishDetection(spec, epoch, report),
      fail,
      trustsOrigin: (origin) => this.#holdsRelay(spec.id, origin),
      nextFrameId: () => this.#nextFrameId(spec.id, epoch),
    };
  }

  /** Frame ids per camera, kept by the node so that a restarted actor at the same epoch goes on counting. */
  #nextFrameId(camera: string, epoch: number): number {
    const ids = this.#frameIds.get(camera);
    if (ids === undefined || ids.epoch !== epoch) {
      this.#frameIds.set(camera, { epoch, next: 1 });
      return 0;
    }
    return ids.next++;
  }

  /** True when the gateway at `origin` holds the camera's relay: a camfleet gateway, which the API token is meant for. */
  async #holdsRelay(camera: string, origin: string): Promise<boolean> {
    const entry = await this.#relaysKv?.get(kvKeys.relay(camera)).catch(() => null);
    if (entry === undefined || entry === null || entry.operation !== "PUT") return false;
    const relay = RelaySchema.safeParse(entry.json());
    return relay.success && URL.canParse(relay.data.url) && new URL(relay.data.url).origin === origin;
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
    return { camera: spec.id, tenant: spec.tenant, site: spec.site, node: this.id, epoch, ts: this.#clock.wallNow() };
  }

  /** Stamps a DetectionEvent and hands it to the buffered publisher, unless fenced. */
  #publishDetection(spec: CameraSpec, epoch: number, report: DetectionReport): DetectionOutcome {
    const publisher = this.#detections;
    if (publisher === undefined || !this.#holds(spec.id, epoch)) return "fenced";
    const id = detectionMsgId(spec.id, epoch, report.frame_id);
    const event: DetectionEvent = { type: "detection", id, ...this.#origin(spec, epoch), ...report };
    // Asked again before each attempt: a node that fenced itself while NATS was away never sends them late.
    return publisher.publish(subjects.detections(spec.id, spec.tenant, spec.site), JSON.stringify(event), id, () => this.#holds(spec.id, epoch));
  }

  /**
   * Queues a StatusEvent while this node holds the camera at `epoch`. Events
   * go out in order through a buffer: while NATS is away they wait and are
   * retried with the same Nats-Msg-Id (stored once), and the lease is asked
   * again before every attempt, so a node that fenced itself meanwhile never
   * sends them late beside the new owner's. A periodic summary is not queued
   * behind a backlog (PERIODIC_BACKLOG): the next one says the same, fresher.
   */
  #publishStatus(spec: CameraSpec, epoch: number, report: StatusReport): void {
    const publisher = this.#statusEvents;
    if (publisher === undefined || !this.#holds(spec.id, epoch)) return;
    if (report.trigger === "periodic" && publisher.pending >= PERIODIC_BACKLOG) return;
    const move = this.#moves.get(spec.id);
    const announce = move !== undefined && move.epoch === epoch ? { previous_node: move.previous_node, ...(move.reason !== undefined ? { reason: move.reason } : {}) } : {};
    if (move !== undefined) this.#moves.delete(spec.id);
    const handover = this.#handingOver.get(spec.id);
    const said = report.state === "STOPPED" && handover !== undefined ? { reason: handover } : {};
    const event: StatusEvent = { type: "status", ...this.#origin(spec, epoch), ...report, ...announce, ...said };
    this.#lastState.set(spec.id, { epoch, state: report.state });
    publisher.publish(subjects.status(spec.id, spec.tenant, spec.site), JSON.stringify(event), statusMsgId(spec.id, epoch, this.#nextStatusSeq(spec.id, epoch)), () =>
      this.#holds(spec.id, epoch),
    );
  }

  async #stateOf(spec: CameraSpec): Promise<CameraState | undefined> {
    const mine = this.#owned.get(spec.id);
    if (mine !== undefined) return mine.slot.status().state;
    const msg = await this.#jsm?.streams.getMessage(STREAMS.status, { last_by_subj: subjects.status(spec.id, spec.tenant, spec.site) });
    if (msg === undefined || msg === null) return undefined;
    const parsed = StatusEventSchema.safeParse(msg.json());
    return parsed.success ? parsed.data.state : undefined;
  }

  /** The camera is no longer this node's: its subscriptions go, and its per-camera series with it (no stale series after a failover). */
  #forget(camera: string): Owned | undefined {
    const owned = this.#owned.get(camera);
    if (owned === undefined) return undefined;
    this.#owned.delete(camera);
    // drain, not unsubscribe: a request the server routed here before it saw the UNSUB is still
    // answered (unsubscribe would drop it, and its caller would wait out its whole timeout).
    for (const sub of [owned.statusSub, owned.viewersSub, owned.snapshotSub]) void sub.drain().catch(() => undefined);
    this.#restarts.remove({ camera });
    this.#frameIds.delete(camera);
    this.#moves.delete(camera);
    return owned;
  }

  #leaseLost(camera: string, reason: LeaseLossReason, lease: Readonly<OwnedLease>): void {
    const owned = this.#forget(camera);
    if (owned === undefined) return;
    this.metrics.camerasOwned.set(this.#owned.size);
    // revision and sinceRenewalMs let a reader check, on this node's clock alone, that the
    // fence fell before any takeover of that same revision (see the claim line's leaseAgeMs).
    this.#options.logger.warn(
      {
        camera,
        reason,
        epoch: owned.slot.epoch,
        revision: lease.revision,
        sinceRenewalMs: Math.round(this.#clock.now() - lease.renewedAt),
        // Why no outage hold kept it, when one was tried: what the last majority proof saw.
        ...(this.#lastProof !== undefined ? { lastProof: this.#proofSummary(this.#lastProof) } : {}),
        // What the renewals met since the last one that worked, and whether an outage hold had begun.
        ...this.#troubleSummary(lease),
      },
      LOG_MESSAGES.leaseLost,
    );
    void owned.slot.stop("lease-lost");
    this.#statusSeq.delete(camera); // fenced: nothing more is published at this epoch
    this.#queueReconcile();
  }

  /** Stops a camera's actor, then gives its lease up. */
  async #release(camera: string, reason: StopReason): Promise<void> {
    const owned = this.#forget(camera);
    if (owned === undefined) return;
    // A handover's STOPPED says why: the node that claims the camera next reads it (#previousOwner).
    if (reason === "released" || reason === "shutdown") this.#handingOver.set(camera, this.#draining || reason === "shutdown" ? "drain" : "rebalance");
    try {
      await owned.slot.stop(reason);
      // Say STOPPED while the lease still lets us speak for the camera, unless the actor's own last word was STOPPED already.
      const last = this.#lastState.get(camera);
      if (!(last?.epoch === owned.slot.epoch && last.state === "STOPPED")) this.#publishStatus(owned.slot.spec, owned.slot.epoch, { state: "STOPPED", trigger: "edge" });
    } finally {
      this.#handingOver.delete(camera);
      this.#lastState.delete(camera);
    }
    // What was queued goes out while the lease still covers it (afterwards it would count as fenced).
    await Promise.all([this.#detections?.flush(1000), this.#statusEvents?.flush(1000)]);
    await this.#leases?.release(camera);
    // Only now: the STOPPED above still counted on, and a new sequence would repeat the msg-ids of this epoch.
    this.#statusSeq.delete(camera);
    this.metrics.camerasOwned.set(this.#owned.size);
    this.#options.logger.info({ camera, reason }, LOG_MESSAGES.releasedCamera);
    this.#queueReconcile();
  }

  /** Hands every camera over and claims no more. Resolves with how many were released. */
  async drain(): Promise<number> {
    this.#draining = true;
    await this.#heartbeat(); // others stop counting on us before the cameras come free
    const cameras = [...this.#owned.keys()];
    await Promise.all(cameras.map((camera) => this.#release(camera, "released")));
    this.#options.logger.info({ released: cameras.length }, LOG_MESSAGES.drained);
    return cameras.length;
  }

  /** Hands cameras over and stops everything this node started, in reverse order. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const log = this.#options.logger;
      for (const t of this.#timers) t.stop();
      this.#clock.clearTimeout(this.#wakeTimer);
      // New control requests go to other nodes from here on; the ones taken are answered below.
      const controlStopped = this.#control?.stop();
      const owned = [...this.#owned.entries()];
      const cameras = owned.map(([camera]) => camera);
      const released = Promise.all(cameras.map((camera) => this.#release(camera, "shutdown")));
      // Actors stop for sure, NATS or not.
      await Promise.all(owned.map(([, o]) => o.slot.stop("shutdown")));
      // Nothing more to watch or renew: the watches would only see the connection close
      // (their consumers are deleted on the server, below, before the connection drains).
      const viewStopped = this.#view?.stop();
      // Telling the cluster (lease deletes, heartbeat delete, flush) gets one deadline
      // in all: a lease we could not delete simply expires.
      const told = (async () => {
        await released;
        await controlStopped;
        await viewStopped;
        // Detections the actors published before they stopped reach JetStream if NATS lets them.
        const left = await this.#detections?.flush(SHUTDOWN_NATS_DEADLINE_MS / 2);
        if (left === false) log.warn({ pending: this.#detections?.pending }, "detections still unacknowledged at shutdown; given up");
        this.#detections?.stop();
        this.#statusEvents?.stop();
        await this.#nodesKv?.delete(kvKeys.node(this.id)).catch(() => undefined);
        if (this.#nc !== undefined && !this.#nc.isClosed()) {
          // drain: finish in-flight handlers and flush publishes before closing.
          await this.#nc.drain().catch((err: unknown) => log.warn({ err }, "draining the NATS connection failed"));
        }
      })();
      // A failure to tell counts as told: only a hang needs the forced close.
      const settled = told.then(
        () => true,
        () => true,
      );
      if ((await withTimeout(settled, SHUTDOWN_NATS_DEADLINE_MS, this.#clock)) === timedOut) {
        log.warn("NATS did not confirm the shutdown in time; unreleased leases will expire");
        await this.#nc?.close().catch(() => undefined);
      }
      if (cameras.length > 0) log.info({ released: cameras.length }, "released cameras for shutdown");
      this.#leases?.stop();
      await this.#witness?.close();
      await this.#ops?.close();
      if (this.#embedded !== undefined) {
        await this.#embedded.stop();
        log.info("embedded nats-server stopped");
      }
      log.info(LOG_MESSAGES.nodeStopped);
    })();
    return this.#stopping;
  }
}
