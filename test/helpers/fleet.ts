// Fleet-level helpers for tests: several `camfleet node` processes running sim
// actors, cameras put through the control API, the ownership map from the
// leases bucket, the status event log from JetStream, and a checker that
// proves from that log that no camera was ever run by two nodes at once.
//
// Teardown follows the harness: every function that starts something takes
// `onCleanup` and registers its teardown before it starts anything.

import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";
import {
  BUCKETS,
  control,
  kvKeys,
  LeaseSchema,
  STREAMS,
  StatusEventSchema,
  subjects,
  type CameraSpecInput,
  type ControlName,
  type ControlReply,
  type StatusEvent,
} from "../../subjects/index.ts";
import { LOG_MESSAGES, NatsServerProcess } from "../../runtime/index.ts";
import { isAlive, runCamfleet, type CamfleetProcess } from "./camfleet-process.ts";
import type { RegisterCleanup } from "./nats-harness.ts";
import { readStreamToEnd } from "./streams.ts";
import { waitFor } from "./wait.ts";

// ---------------------------------------------------------------- node processes

export interface FleetNodeProcess {
  /** NODE_ID. */
  id: string;
  proc: CamfleetProcess;
  pid: number;
  /** Date.now() when the process exited; undefined while it runs. */
  exitedAt(): number | undefined;
  alive(): boolean;
}

export interface StartFleetNodeOptions {
  id: string;
  /** NATS client URLs the node is given (NATS_URL, comma-separated). */
  natsUrls: string[];
  /** Extra environment; wins over the defaults. */
  env?: Record<string, string>;
  onCleanup: RegisterCleanup;
  /** Milliseconds to wait for LOG_MESSAGES.nodeReady. Default 20000. */
  readyTimeoutMs?: number;
}

/** Default environment of a sim node in tests. Lease TTL is the default 3 s, spelled out because tests time against it. */
export const SIM_NODE_ENV = {
  HTTP_PORT: "0",
  CAMFLEET_ACTOR_KIND: "sim",
  LEASE_TTL_MS: "3000",
  MAX_CAMERAS: "32",
  LOG_LEVEL: "debug",
} as const;

/** Starts one `camfleet node` with sim actors; resolves once it logged LOG_MESSAGES.nodeReady. */
export async function startFleetNode(opts: StartFleetNodeOptions): Promise<FleetNodeProcess> {
  const proc = runCamfleet(["node"], {
    env: { ...SIM_NODE_ENV, NODE_ID: opts.id, NATS_URL: opts.natsUrls.join(","), ...opts.env },
    onCleanup: opts.onCleanup,
  });
  let exitedAt: number | undefined;
  void proc.exited.then(() => {
    exitedAt = Date.now();
  });
  const pid = proc.child.pid;
  if (pid === undefined) throw new Error(`node ${opts.id}: the process could not be spawned\n${proc.stderr()}`);
  await proc.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady, opts.readyTimeoutMs ?? 20_000);
  return {
    id: opts.id,
    proc,
    pid,
    exitedAt: () => exitedAt,
    alive: () => exitedAt === undefined && proc.child.exitCode === null && proc.child.signalCode === null,
  };
}

export interface StartFleetOptions {
  count: number;
  /** URLs for every node, or per node (index from 0). */
  natsUrls: string[] | ((index: number) => string[]);
  /** Node ids; default n1, n2, … */
  ids?: string[];
  env?: Record<string, string>;
  onCleanup: RegisterCleanup;
}

/** Starts `count` sim nodes in parallel; resolves once every one is ready. */
export async function startFleet(opts: StartFleetOptions): Promise<FleetNodeProcess[]> {
  const ids = opts.ids ?? Array.from({ length: opts.count }, (_, i) => `n${i + 1}`);
  return Promise.all(
    ids.map((id, i) =>
      startFleetNode({
        id,
        natsUrls: typeof opts.natsUrls === "function" ? opts.natsUrls(i) : opts.natsUrls,
        ...(opts.env !== undefined ? { env: opts.env } : {}),
        onCleanup: opts.onCleanup,
      }),
    ),
  );
}

/** The log lines with this `msg`. */
export function logLines(node: FleetNodeProcess, msg: string): Array<Record<string, unknown>> {
  return node.proc.lines.filter((l) => l.msg === msg);
}

/** Milliseconds since the epoch of a log line's ISO `time`. */
export function logTime(line: Record<string, unknown>): number {
  return Date.parse(String(line.time));
}

/**
 * Cameras a node runs according to its own log (claimed, not yet released or
 * fenced), with the epoch of each. Lags the process by the log buffer's flush.
 */
export function ownedByLog(node: FleetNodeProcess): Map<string, number> {
  const owned = new Map<string, number>();
  for (const line of node.proc.lines) {
    const camera = line.camera;
    if (typeof camera !== "string") continue;
    if (line.msg === LOG_MESSAGES.claimedCamera) owned.set(camera, Number(line.epoch));
    else if (line.msg === LOG_MESSAGES.releasedCamera || line.msg === LOG_MESSAGES.leaseLost) owned.delete(camera);
  }
  return owned;
}

/** A claim as the claiming node logged it. */
export interface ClaimRecord {
  camera: string;
  node: string;
  epoch: number;
  takeover: boolean;
  /** A takeover's: the revision of the expired lease it replaced, and how long the claiming node had seen that lease unchanged (its own clock). */
  takeoverRevision?: number;
  leaseAgeMs?: number;
  /** A takeover's: "holder gone" (the fast path) or "ttl", and how long before the claim the node's ages had last restarted. */
  expiredBy?: string;
  agesRestartedAgoMs?: number;
  /** Log time, ms since the epoch. */
  time: number;
}

export function claimsFromLogs(nodes: readonly FleetNodeProcess[]): ClaimRecord[] {
  const claims: ClaimRecord[] = [];
  for (const node of nodes) {
    for (const line of logLines(node, LOG_MESSAGES.claimedCamera)) {
      claims.push({
        camera: String(line.camera),
        node: node.id,
        epoch: Number(line.epoch),
        takeover: line.takeover === true,
        ...(typeof line.takeoverRevision === "number" ? { takeoverRevision: line.takeoverRevision } : {}),
        ...(typeof line.leaseAgeMs === "number" ? { leaseAgeMs: line.leaseAgeMs } : {}),
        ...(typeof line.expiredBy === "string" ? { expiredBy: line.expiredBy } : {}),
        ...(typeof line.agesRestartedAgoMs === "number" ? { agesRestartedAgoMs: line.agesRestartedAgoMs } : {}),
        time: logTime(line),
      });
    }
  }
  return claims.sort((a, b) => a.time - b.time);
}

/** nats-servers a test started, with the teardown that stops them (a NatsClusterHandle is one). */
export interface ServerGroup {
  servers: readonly NatsServerProcess[];
  close(): Promise<void>;
}

/**
 * Stops every node that still runs (SIGTERM, clean shutdown), then the NATS
 * servers, and resolves with the pids still alive: nodes, the servers' current
 * processes, and `earlierPids` (server processes a test restarted or killed).
 * Expected: none. The caller asserts on the result.
 */
export async function stopEverything(
  nodes: readonly FleetNodeProcess[],
  groups: readonly ServerGroup[] = [],
  earlierPids: ReadonlyArray<number | undefined> = [],
): Promise<number[]> {
  await Promise.all(nodes.map((n) => n.proc.stop()));
  const serverPids = [...groups.flatMap((g) => g.servers.map((s) => s.pid)), ...earlierPids];
  await Promise.all(groups.map((g) => g.close()));
  const pids = [...nodes.map((n) => n.pid), ...serverPids].filter((p): p is number => p !== undefined);
  return [...new Set(pids)].filter((pid) => isAlive(pid));
}

// ---------------------------------------------------------------- NATS side

/** A test client that keeps reconnecting for ever (servers restart in fault tests). */
export async function connectTestClient(urls: string[], onCleanup: RegisterCleanup): Promise<NatsConnection> {
  const nc = await connect({ servers: urls, name: "camfleet-test", maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 5000 });
  onCleanup(async () => {
    if (!nc.isClosed()) await nc.close();
  });
  return nc;
}

/** The fields of a successful control reply. */
export type ControlOk<N extends ControlName> = Omit<Extract<ControlReply<N>, { ok: true }>, "ok">;

/** One control request; resolves with the reply's fields, rejects with the reply's error. */
export async function controlRequest<N extends ControlName>(
  nc: NatsConnection,
  op: N,
  subject: string,
  body: unknown,
  timeoutMs = 5000,
): Promise<ControlOk<N>> {
  const msg = await nc.request(subject, JSON.stringify(body), { timeout: timeoutMs });
  const schema = control[op].reply as unknown as z.ZodType<ControlReply<N>>;
  const reply = schema.parse(msg.json()) as { ok: boolean; error?: { code: string; message: string } };
  if (!reply.ok) throw new Error(`${op} on ${subject} failed: ${reply.error?.code}: ${reply.error?.message}`);
  const { ok: _ok, ...fields } = reply;
  return fields as ControlOk<N>;
}

/** cam01, cam02, … */
export function cameraIds(count: number, prefix = "cam"): string[] {
  const width = Math.max(2, String(count).length);
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(width, "0")}`);
}

/** A sim camera's spec. */
export function simSpec(id: string, extra: Partial<CameraSpecInput> = {}): CameraSpecInput {
  return { id, url: `rtsp://127.0.0.1/sim/${id}`, ...extra };
}

export function putCamera(nc: NatsConnection, spec: CameraSpecInput): Promise<ControlOk<"camerasPut">> {
  return controlRequest(nc, "camerasPut", subjects.ctl.camerasPut, spec);
}

/** Puts sim cameras (all at once); resolves with their ids. */
export async function putCameras(nc: NatsConnection, ids: readonly string[], extra: Partial<CameraSpecInput> = {}): Promise<string[]> {
  await Promise.all(ids.map((id) => putCamera(nc, simSpec(id, extra))));
  return [...ids];
}

/**
 * The leases bucket for reading. Requests give up after 2 s (not the client's
 * 5 s), so a request lost while the test client moves to another server costs
 * little inside a waitFor.
 */
export function openLeases(nc: NatsConnection): Promise<KV> {
  return new Kvm(jetstream(nc, { timeout: 2000 })).open(BUCKETS.leases);
}

export interface LeaseOwner {
  node: string;
  /** 0 while a claim is being stamped (the first write of a claim). */
  epoch: number;
  /** KV revision of the entry. */
  revision: number;
}

/**
 * The ownership map camera → {node, epoch} of the given cameras, as the
 * leases bucket holds it now. A bucket opened with `Kvm.open` reads without
 * direct get, so each read is answered by the stream leader, never by a
 * lagging replica, and needs no consumer (whose creation stalls while a
 * cluster re-elects). Released (deleted) leases are absent. Nothing deletes
 * the lease of a killed node: it stays until another node takes it over.
 */
export async function readOwnership(kv: KV, cameras: readonly string[]): Promise<Map<string, LeaseOwner>> {
  const entries = await Promise.all(cameras.map((c) => kv.get(kvKeys.lease(c))));
  const map = new Map<string, LeaseOwner>();
  cameras.forEach((camera, i) => {
    const entry = entries[i];
    if (entry === null || entry === undefined || entry.operation !== "PUT") return;
    const lease = LeaseSchema.parse(entry.json());
    map.set(camera, { node: lease.node, epoch: lease.epoch, revision: entry.revision });
  });
  return map;
}

/**
 * Resolves after `rounds` rounds of lease renewals: in each, every one of
 * `cameras` gets a revision newer than the newest of theirs when the round
 * began. Lets time pass by events instead of a sleep (one round ≈ TTL/4);
 * rejects if the renewals stop.
 */
export async function renewalRounds(kv: KV, cameras: readonly string[], rounds: number, timeoutMs = 5000): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    // A lease whose revision is above every revision seen now was written after now.
    const start = await waitFor(() => readOwnership(kv, cameras), { timeoutMs, message: "reading the leases" });
    const mark = Math.max(0, ...[...start.values()].map((o) => o.revision));
    await waitFor(
      async () => {
        const now = await readOwnership(kv, cameras);
        return cameras.every((c) => (now.get(c)?.revision ?? 0) > mark);
      },
      { timeoutMs, intervalMs: 100, message: `lease renewal round ${round + 1} of ${rounds}` },
    );
  }
}

/** Cameras per node in an ownership map (only the given cameras, only stamped leases). */
export function countByNode(owners: ReadonlyMap<string, LeaseOwner>, cameras: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const camera of cameras) {
    const o = owners.get(camera);
    if (o !== undefined && o.epoch > 0) counts.set(o.node, (counts.get(o.node) ?? 0) + 1);
  }
  return counts;
}

/** expectOwnedExactlyOnce found cameras not owned exactly once; `cameras` names them. */
export class OwnershipNotSettledError extends Error {
  override name = "OwnershipNotSettledError";
  constructor(
    readonly problems: string[],
    readonly cameras: string[],
  ) {
    super(`ownership not settled:\n  ${problems.join("\n  ")}`);
  }
}

/**
 * Throws OwnershipNotSettledError (with what is wrong) unless every camera is owned exactly once by
 * one of `nodes`: its lease names a live node of the list with a stamped
 * epoch, that node's log says it runs the camera under that epoch, and no
 * other live node's log says it runs it. Resolves with the ownership map.
 * Meant for `waitFor(() => expectOwnedExactlyOnce(…))`.
 */
export async function expectOwnedExactlyOnce(kv: KV, nodes: readonly FleetNodeProcess[], cameras: readonly string[]): Promise<Map<string, LeaseOwner>> {
  const owners = await readOwnership(kv, cameras);
  const live = nodes.filter((n) => n.alive());
  const byLog = new Map(live.map((n) => [n.id, ownedByLog(n)]));
  const problems: string[] = [];
  const unsettled: string[] = [];
  for (const camera of cameras) {
    const before = problems.length;
    const lease = owners.get(camera);
    const runners = live.filter((n) => byLog.get(n.id)!.has(camera)).map((n) => `${n.id}@${byLog.get(n.id)!.get(camera)}`);
    if (lease === undefined) problems.push(`${camera}: no lease (run by ${runners.join(",") || "nobody"})`);
    else if (lease.epoch === 0) problems.push(`${camera}: claim by ${lease.node} not stamped yet`);
    else if (!live.some((n) => n.id === lease.node)) problems.push(`${camera}: lease held by ${lease.node}, not a live node of [${live.map((n) => n.id).join(",")}]`);
    else if (runners.length !== 1 || runners[0] !== `${lease.node}@${lease.epoch}`) {
      problems.push(`${camera}: lease ${lease.node}@${lease.epoch}, run by [${runners.join(",")}]`);
    }
    if (problems.length > before) unsettled.push(camera);
  }
  if (problems.length > 0) throw new OwnershipNotSettledError(problems, unsettled);
  return owners;
}

const TRAIL_MSGS = new Set<string>([LOG_MESSAGES.claimedCamera, LOG_MESSAGES.claimFailed, LOG_MESSAGES.releasedCamera, LOG_MESSAGES.leaseLost, LOG_MESSAGES.handingOver]);

/**
 * The ownership story of some cameras from every node's log, in time order:
 * claims, releases, fences and hand-overs. For failure messages.
 */
/** A fence's evidence, when its line has it: the last majority proof, what the renewals met, how long ago an outage hold began. */
function trailExtras(l: Record<string, unknown>): string {
  const parts = (["lastProof", "renewalErrors", "failingForMs", "held", "outageHeldAgoMs"] as const).filter((k) => l[k] !== undefined).map((k) => `${k} ${JSON.stringify(l[k])}`);
  return parts.length > 0 ? ` ${parts.join(" ")}` : "";
}

export function cameraTrail(nodes: readonly FleetNodeProcess[], cameras: readonly string[], linesPerCamera = 8): string {
  const out: string[] = [];
  for (const camera of cameras) {
    const lines = nodes
      .flatMap((n) =>
        n.proc.lines
          .filter((l) => TRAIL_MSGS.has(String(l.msg)) && (l.camera === camera || (Array.isArray(l.cameras) && l.cameras.includes(camera))))
          .map((l) => ({ node: n.id, l })),
      )
      .sort((a, b) => logTime(a.l) - logTime(b.l))
      .slice(-linesPerCamera)
      .map(({ node, l }) => `    ${String(l.time)} ${node}: ${String(l.msg)}${l.epoch !== undefined ? ` epoch ${String(l.epoch)}` : ""}${l.reason !== undefined ? ` (${String(l.reason)})` : ""}${trailExtras(l)}`);
    out.push(`  ${camera}:\n${lines.join("\n") || "    (nothing logged)"}`);
  }
  return out.join("\n");
}

/**
 * Awaits a wait on expectOwnedExactlyOnce; if it times out, rethrows with the
 * log trail of the cameras that were not settled, so a failure explains itself.
 */
export async function explainUnsettled<T>(wait: Promise<T>, nodes: readonly FleetNodeProcess[]): Promise<T> {
  try {
    return await wait;
  } catch (err) {
    const cause = err instanceof Error ? err.cause : undefined;
    if (!(cause instanceof OwnershipNotSettledError)) throw err;
    throw new Error(`${(err as Error).message}\n${cause.message}\nlog trail (last lines per camera):\n${cameraTrail(nodes, cause.cameras.slice(0, 6))}`, { cause: err });
  }
}

// ---------------------------------------------------------------- status events

export interface StatusLog {
  /** Every StatusEvent of the stream so far, in stream order. */
  readonly events: StatusEvent[];
  /** Messages that did not parse as a StatusEvent (should stay empty). */
  readonly invalid: unknown[];
  stop(): void;
}

/**
 * Collects every StatusEvent of CAMFLEET_STATUS from the beginning, live, with
 * an ordered consumer. The stream must exist (a node has started). Meant for
 * a healthy cluster: when the server hosting the consumer dies, the consumer
 * only notices after missing heartbeats (tens of seconds); fault tests read
 * with `streamingNow` and `readStatusEvents` instead.
 */
export async function collectStatusEvents(nc: NatsConnection, onCleanup: RegisterCleanup): Promise<StatusLog> {
  const events: StatusEvent[] = [];
  const invalid: unknown[] = [];
  const consumer = await jetstream(nc).consumers.get(STREAMS.status, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume();
  onCleanup(async () => {
    await messages.close();
  });
  void (async () => {
    for await (const m of messages) {
      const parsed = StatusEventSchema.safeParse(m.json());
      if (parsed.success) events.push(parsed.data);
      else invalid.push(m.string());
    }
  })();
  return { events, invalid, stop: () => void messages.close() };
}

/**
 * Reads CAMFLEET_STATUS from the beginning up to its last message now, with a
 * fresh ordered consumer: the complete log for a final check, whatever a live
 * collector may have missed across faults.
 */
export async function readStatusEvents(nc: NatsConnection, timeoutMs = 10_000): Promise<StatusEvent[]> {
  const lastSeq = (await (await jetstreamManager(nc)).streams.info(STREAMS.status)).state.last_seq;
  if (lastSeq === 0) return [];
  return readStreamToEnd(nc, STREAMS.status, { deliver_policy: DeliverPolicy.All }, lastSeq, (m) => StatusEventSchema.parse(m.json()), timeoutMs);
}

/** True when `camera` reported STREAMING under this node and epoch. */
export function isStreaming(events: readonly StatusEvent[], camera: string, owner: { node: string; epoch: number }): boolean {
  return events.some((e) => e.camera === camera && e.node === owner.node && e.epoch === owner.epoch && e.state === "STREAMING");
}

/**
 * True when every camera's last StatusEvent is STREAMING from its current
 * owner under its current epoch. Read per subject from the stream leader, not
 * through a live consumer, which stalls for a while when the server hosting it dies.
 */
export async function streamingNow(nc: NatsConnection, owners: ReadonlyMap<string, LeaseOwner>, cameras: readonly string[]): Promise<boolean> {
  const jsm = await jetstreamManager(nc);
  const last = await Promise.all(
    cameras.map(async (c) => {
      const msg = await jsm.streams.getMessage(STREAMS.status, { last_by_subj: subjects.status(c) });
      return msg === null ? undefined : StatusEventSchema.parse(msg.json());
    }),
  );
  return cameras.every((c, i) => {
    const o = owners.get(c);
    const e = last[i];
    return o !== undefined && e !== undefined && e.state === "STREAMING" && e.node === o.node && e.epoch === o.epoch;
  });
}

// ---------------------------------------------------------------- the checker

/**
 * findOwnershipViolations against the nodes' LOG_MESSAGES.claimedCamera log lines,
 * allowing those lines up to 3 s to arrive: a claim is in KV, and its status
 * events in the stream, before its log line has crossed the node's stdout
 * pipe. A real violation stays one.
 */
export async function ownershipViolations(events: readonly StatusEvent[], nodes: readonly FleetNodeProcess[]): Promise<string[]> {
  let problems = findOwnershipViolations(events, claimsFromLogs(nodes));
  if (problems.length === 0) return problems;
  await waitFor(
    () => {
      problems = findOwnershipViolations(events, claimsFromLogs(nodes));
      return problems.length === 0;
    },
    { timeoutMs: 3000, intervalMs: 100 },
  ).catch(() => undefined);
  return problems;
}

/**
 * Proves from the event log that no camera was ever run by two nodes at once.
 * For each camera, every epoch is an interval [first ts, last ts] of the
 * events stamped with it; then:
 *  - every event carries a claim epoch (> 0), and one epoch belongs to one node;
 *  - intervals do not overlap: once a higher epoch has published, no event of
 *    a lower epoch has a later ts (so, in ts order, epochs only grow);
 * and, when the claims from the nodes' logs are given:
 *  - per camera, claims in log-time order have strictly growing epochs;
 *  - every event's (node, epoch) is a logged claim.
 * Timestamps come from the nodes' clocks; tests run them on one machine.
 * Returns the violations; empty means the log is consistent.
 */
export function findOwnershipViolations(events: readonly StatusEvent[], claims?: readonly ClaimRecord[]): string[] {
  const problems: string[] = [];
  const byCamera = new Map<string, StatusEvent[]>();
  for (const e of events) {
    const list = byCamera.get(e.camera) ?? [];
    list.push(e);
    byCamera.set(e.camera, list);
  }
  for (const [camera, list] of byCamera) {
    const intervals = new Map<number, { node: string; first: number; last: number }>();
    for (const e of list) {
      if (e.epoch <= 0) problems.push(`${camera}: event from ${e.node} with epoch ${e.epoch} (state ${e.state}, ts ${e.ts})`);
      const iv = intervals.get(e.epoch);
      if (iv === undefined) {
        intervals.set(e.epoch, { node: e.node, first: e.ts, last: e.ts });
        continue;
      }
      if (iv.node !== e.node) problems.push(`${camera}: epoch ${e.epoch} used by both ${iv.node} and ${e.node}`);
      iv.first = Math.min(iv.first, e.ts);
      iv.last = Math.max(iv.last, e.ts);
    }
    const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length; j++) {
        const [lowEpoch, low] = sorted[i]!;
        const [highEpoch, high] = sorted[j]!;
        if (low.last > high.first) {
          problems.push(
            `${camera}: epoch ${lowEpoch} (${low.node}) published at ${iso(low.last)}, after epoch ${highEpoch} (${high.node}) began at ${iso(high.first)}`,
          );
        }
      }
    }
  }
  if (claims !== undefined) {
    const claimed = new Set<string>();
    const lastEpoch = new Map<string, ClaimRecord>();
    for (const c of [...claims].sort((a, b) => a.time - b.time)) {
      claimed.add(`${c.camera}/${c.node}/${c.epoch}`);
      const prev = lastEpoch.get(c.camera);
      if (prev !== undefined && c.epoch <= prev.epoch) {
        problems.push(`${c.camera}: ${c.node} claimed epoch ${c.epoch} at ${iso(c.time)}, after ${prev.node} claimed epoch ${prev.epoch} at ${iso(prev.time)}`);
      }
      lastEpoch.set(c.camera, c);
    }
    const reported = new Set<string>();
    for (const e of events) {
      const key = `${e.camera}/${e.node}/${e.epoch}`;
      if (!claimed.has(key) && !reported.has(key)) {
        reported.add(key);
        problems.push(`${e.camera}: events from ${e.node} under epoch ${e.epoch}, which no node logged claiming`);
      }
    }
  }
  return problems;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export interface JetStreamLeaders {
  meta?: string;
  leases?: string;
  nodes?: string;
  cameras?: string;
  status?: string;
}

export async function jetStreamLeaders(nc: NatsConnection, servers: readonly NatsServerProcess[]): Promise<JetStreamLeaders> {
  const kvm = new Kvm(nc);
  const bucketLeader = async (bucket: string) => (await (await kvm.open(bucket)).status()).streamInfo.cluster?.leader;
  const jsm = await jetstreamManager(nc);
  const [leases, nodes, cameras, status] = await Promise.all([
    bucketLeader(BUCKETS.leases),
    bucketLeader(BUCKETS.nodes),
    bucketLeader(BUCKETS.cameras),
    jsm.streams.info(STREAMS.status).then((i) => i.cluster?.leader),
  ]);
  let meta: string | undefined;
  for (const s of servers.filter((s) => s.running)) {
    const jsz = (await (await fetch(`http://127.0.0.1:${s.monitorPort}/jsz`)).json()) as { meta_cluster?: { leader?: string } };
    meta = jsz.meta_cluster?.leader;
    if (meta !== undefined) break;
  }
  const leaders: JetStreamLeaders = {};
  for (const [k, v] of Object.entries({ meta, leases, nodes, cameras, status })) if (v !== undefined) leaders[k as keyof JetStreamLeaders] = v;
  return leaders;
}

/**
 * Steps the leader of the leases bucket down until `server` leads it: each
 * step-down elects one of the other replicas, so a few rounds land it there.
 */
export async function leadLeasesFrom(nc: NatsConnection, servers: readonly NatsServerProcess[], server: string): Promise<void> {
  const leader = () => waitFor(async () => (await jetStreamLeaders(nc, servers)).leases, { timeoutMs: 20_000, message: "the leases leader" });
  for (let attempt = 0; attempt < 20; attempt++) {
    const now = await leader();
    if (now === server) return;
    await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.KV_${BUCKETS.leases}`, undefined, { timeout: 5000 });
    await waitFor(async () => ((await leader()) !== now ? true : undefined), { timeoutMs: 20_000, intervalMs: 200, message: `a leases leader other than ${now}` });
  }
  throw new Error(`the leases leader never landed on ${server} in 20 step-downs`);
}

/**
 * The server whose loss disturbs the fleet least: it leads neither the leases
 * bucket nor, if it can be helped, the nodes bucket, the meta group, the
 * cameras bucket or the status stream (in that order of weight). With
 * `connectedTo`, servers that some node is connected to come first, so the
 * loss also makes a node move to another server — but never at the price of
 * killing the leases or nodes leader: when every node sits on that server, a
 * server no node uses is the quieter loss.
 */
export function quietestServer(servers: readonly NatsServerProcess[], leaders: JetStreamLeaders, connectedTo?: readonly FleetNodeProcess[]): NatsServerProcess {
  const weight: Record<keyof JetStreamLeaders, number> = { leases: 1000, nodes: 500, meta: 4, cameras: 2, status: 1 };
  const used = new Set((connectedTo ?? []).map((n) => connectedServer(n)));
  const score = (s: NatsServerProcess) =>
    (connectedTo !== undefined && !used.has(`127.0.0.1:${s.port}`) ? 100 : 0) +
    Object.entries(leaders).reduce((sum, [k, v]) => sum + (v === s.name ? weight[k as keyof JetStreamLeaders] : 0), 0);
  return [...servers].sort((a, b) => score(a) - score(b))[0]!;
}

/** host:port of the server a node is connected to now, from its log. */
export function connectedServer(node: FleetNodeProcess): string | undefined {
  const line = node.proc.lines.filter((l) => l.msg === LOG_MESSAGES.connectedToNats || l.msg === LOG_MESSAGES.reconnectedToNats).at(-1);
  return typeof line?.server === "string" ? line.server : undefined;
}
