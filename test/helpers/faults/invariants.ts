// The invariants a fault must not break, each judged from what the fleet
// wrote down, never from what a node says about itself:
//  - one owner per camera at any instant: from the status stream (epochs only
//    grow, no two owners' STREAMING intervals overlap; fleet.ts's checker) and
//    from the leases bucket's history (epochs only grow, one node per epoch);
//  - every enabled camera STREAMING again within its target (recoveryOf);
//  - detections unique and in order per camera and epoch, and an old epoch
//    never publishes after a newer one began;
//  - no FFmpeg outlives its camera (/proc: parent alive, camera owned by it).
// Each returns a list of problems; empty means the invariant held.

import { readFileSync, readdirSync } from "node:fs";
import { DeliverPolicy, jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { BUCKETS, DetectionEventSchema, kvKeys, LeaseSchema, MSG_ID_HEADER, StatusEventSchema, STREAMS, type StatusEvent } from "../../../subjects/index.ts";
import type { StoredDetection } from "../detections.ts";
import type { LeaseOwner } from "../fleet.ts";
import { readStreamToEnd } from "../streams.ts";

// ---------------------------------------------------------------- leases history

export interface LeaseRevision {
  camera: string;
  revision: number;
  /** "DEL"/"PURGE" for a release. */
  operation: "PUT" | "DEL" | "PURGE";
  node?: string;
  epoch?: number;
}

/** A history read came from a replica behind the leader; read again. */
export class StaleHistoryError extends Error {
  override name = "StaleHistoryError";
}

/**
 * Everything the leases bucket remembers, merged across reads: the bucket
 * keeps LEASE_HISTORY revisions per camera, so reading after every fault and
 * keeping what was read assembles the whole run. `gaps` names cameras whose
 * history may have lost revisions between two reads (the checks then cover
 * less, and the report says so).
 */
export class LeaseHistory {
  readonly byCamera = new Map<string, Map<number, LeaseRevision>>();
  readonly gaps = new Set<string>();
  /** Revisions an earlier read returned that a later read no longer has. */
  readonly vanished: LeaseRevision[] = [];

  /** `historyLimit`: the bucket's history setting (LEASE_HISTORY). */
  constructor(readonly historyLimit: number) {}

  /**
   * Reads each camera's lease history with a reader that deletes its
   * consumer afterwards: the KV client's own history() leaves an ordered
   * consumer per call for the server to drop 5 minutes later (the soak
   * counted 184 a minute of them, retries included).
   */
  async read(nc: NatsConnection, kv: KV, cameras: readonly string[]): Promise<void> {
    for (const camera of cameras) {
      const kept = this.byCamera.get(camera) ?? new Map<number, LeaseRevision>();
      const fresh: LeaseRevision[] = [];
      // The history comes through an ordered consumer, which the cluster may
      // place on any replica: one that is still catching up after a restart
      // answers with an old or holed view. The current revision, read from the
      // stream leader (no direct get), tells a complete answer from such a one.
      const current = await kv.get(kvKeys.lease(camera));
      if (current !== null) {
        const subject = `$KV.${BUCKETS.leases}.${kvKeys.lease(camera)}`;
        const read = await readStreamToEnd(
          nc,
          `KV_${BUCKETS.leases}`,
          { deliver_policy: DeliverPolicy.All, filter_subjects: subject },
          current.revision,
          (m): LeaseRevision => {
            const op = m.headers?.get("KV-Operation");
            const operation = op === "DEL" || op === "PURGE" ? op : "PUT";
            const rev: LeaseRevision = { camera, revision: m.seq, operation };
            if (operation === "PUT") {
              const lease = LeaseSchema.parse(m.json());
              rev.node = lease.node;
              rev.epoch = lease.epoch;
            }
            return rev;
          },
          10_000,
        );
        fresh.push(...read);
      }
      // A revision an earlier read returned, inside the range this read covers,
      // but missing from it: the bucket's history changed under us (a write that
      // a leader showed and the cluster then lost). Reported, and dropped from
      // the kept history so the epoch checks judge the timeline that remains.
      const newestFresh = Math.max(0, ...fresh.map((r) => r.revision));
      if (current !== null && newestFresh < current.revision) {
        throw new StaleHistoryError(`${camera}: the leases history read ends at revision ${newestFresh}, the bucket is at ${current.revision} (a lagging replica answered)`);
      }
      const oldestFresh = Math.min(...fresh.map((r) => r.revision));
      const freshRevs = new Set(fresh.map((r) => r.revision));
      for (const [rev, r] of kept) {
        if (rev >= oldestFresh && rev <= newestFresh && !freshRevs.has(rev)) {
          this.vanished.push(r);
          kept.delete(rev);
        }
      }
      // A read that came back full (the bucket's whole history of the key) and
      // shares no revision with what was kept may have missed some between.
      const newestKept = Math.max(0, ...kept.keys());
      if (kept.size > 0 && fresh.length >= this.historyLimit && fresh.every((r) => r.revision > newestKept)) this.gaps.add(camera);
      for (const r of fresh) kept.set(r.revision, r);
      this.byCamera.set(camera, kept);
    }
  }

  /** Revisions per camera, oldest first. */
  revisions(camera: string): LeaseRevision[] {
    return [...(this.byCamera.get(camera)?.values() ?? [])].sort((a, b) => a.revision - b.revision);
  }
}

/**
 * From the leases history: per camera, stamped epochs never decrease; an epoch
 * names one node; an epoch is the revision of its claim (never above the
 * revision that carries it); a holder change comes with a higher epoch.
 * Revisions are the bucket's own order, so no clocks are compared.
 */
export function leaseViolations(history: LeaseHistory): string[] {
  const problems: string[] = [];
  for (const camera of history.byCamera.keys()) {
    let last: LeaseRevision | undefined;
    const epochNode = new Map<number, string>();
    for (const r of history.revisions(camera)) {
      if (r.operation !== "PUT" || r.epoch === undefined || r.epoch === 0) continue; // releases and unstamped drafts
      if (r.epoch > r.revision) problems.push(`${camera}: revision ${r.revision} carries epoch ${r.epoch}, above its own revision`);
      const holder = epochNode.get(r.epoch);
      if (holder !== undefined && holder !== r.node) problems.push(`${camera}: epoch ${r.epoch} held by both ${holder} and ${r.node}`);
      epochNode.set(r.epoch, r.node!);
      if (last !== undefined) {
        if (r.epoch < last.epoch!) problems.push(`${camera}: epoch went back from ${last.epoch} (${last.node}, rev ${last.revision}) to ${r.epoch} (${r.node}, rev ${r.revision})`);
        if (r.node !== last.node && r.epoch <= last.epoch!) problems.push(`${camera}: ${r.node} took over from ${last.node} at rev ${r.revision} without a higher epoch`);
      }
      last = r;
    }
  }
  return problems;
}

// ---------------------------------------------------------------- recovery

export interface CameraRecovery {
  camera: string;
  /** The owner of the camera's final STREAMING run. */
  node: string;
  epoch: number;
  /** ts of the first event of the final STREAMING run (ms since the epoch). */
  streamingSince: number;
  /** True when the camera said anything but STREAMING, or changed owner, after `since`. */
  disturbed: boolean;
}

/**
 * A camera's final STREAMING run in the status log: the longest tail of its
 * events that are all STREAMING from one node and epoch. `disturbed` when
 * that run began after `since` (something interrupted it after the fault).
 * Undefined when the camera's last event is not STREAMING.
 */
export function recoveryOf(events: readonly StatusEvent[], camera: string, since: number): CameraRecovery | undefined {
  const own = events.filter((e) => e.camera === camera);
  const last = own.at(-1);
  if (last === undefined || last.state !== "STREAMING") return undefined;
  let start = own.length - 1;
  while (start > 0) {
    const e = own[start - 1]!;
    if (e.state !== "STREAMING" || e.node !== last.node || e.epoch !== last.epoch) break;
    start--;
  }
  const first = own[start]!;
  return { camera, node: last.node, epoch: last.epoch, streamingSince: first.ts, disturbed: first.ts > since };
}

/** Fresh means the camera's last event is newer than `since`: a periodic summary (every 5 s) proves the run goes on. */
export function lastEventTs(events: readonly StatusEvent[], camera: string): number | undefined {
  for (let i = events.length - 1; i >= 0; i--) if (events[i]!.camera === camera) return events[i]!.ts;
  return undefined;
}

// ---------------------------------------------------------------- detections

/**
 * Per camera and epoch: ids and Nats-Msg-Ids unique (and equal); per camera, once an epoch has published,
 * no lower epoch publishes after it (a fenced owner's buffer never lands
 * behind the new owner's events). `owners` (epoch → node, from the leases
 * history or claims) checks that each epoch's detections came from its holder.
 */
export function detectionViolations(stored: readonly StoredDetection[], epochHolder?: (camera: string, epoch: number) => string | undefined): string[] {
  return new DetectionJudge().feed(stored, epochHolder);
}

/**
 * detectionViolations over a stream read in pieces: it keeps what it needs of
 * the detections seen so far (ids, last frame per epoch, highest epoch per
 * camera), so each check reads only what was stored since the last one.
 */
export class DetectionJudge {
  readonly #seenIds = new Set<string>();
  readonly #lastFrame = new Map<string, number>();
  readonly #highestEpoch = new Map<string, number>();
  /** Frames stored behind a newer frame of the same epoch, since the caller last emptied this. */
  readonly reordered: string[] = [];
  /** The last stream sequence fed; the next read starts after it. */
  lastSeq = 0;

  feed(stored: readonly StoredDetection[], epochHolder?: (camera: string, epoch: number) => string | undefined): string[] {
    const problems: string[] = [];
    for (const { event: d, msgId, seq } of [...stored].sort((a, b) => a.seq - b.seq)) {
      if (seq <= this.lastSeq) continue;
      this.lastSeq = seq;
      if (this.#seenIds.has(d.id)) problems.push(`${d.camera}: detection id ${d.id} stored twice (seq ${seq})`);
      this.#seenIds.add(d.id);
      if (msgId !== d.id) problems.push(`${d.camera}: seq ${seq} stored under Nats-Msg-Id ${msgId}, its id is ${d.id}`);
      const key = `${d.camera}/${d.epoch}`;
      const prev = this.#lastFrame.get(key);
      // Out of order within an epoch: the contract promises each frame once, not stream order,
      // and a publish retried after a NATS outage lands behind newer ones. Said, not judged.
      if (prev !== undefined && d.frame_id <= prev) this.reordered.push(`${d.camera}: epoch ${d.epoch} frame ${d.frame_id} stored after frame ${prev} (seq ${seq})`);
      this.#lastFrame.set(key, Math.max(prev ?? -1, d.frame_id));
      const high = this.#highestEpoch.get(d.camera) ?? 0;
      if (d.epoch < high) problems.push(`${d.camera}: epoch ${d.epoch} (${d.node}) published at seq ${seq}, after epoch ${high} had begun`);
      this.#highestEpoch.set(d.camera, Math.max(high, d.epoch));
      const holder = epochHolder?.(d.camera, d.epoch);
      if (holder !== undefined && holder !== d.node) problems.push(`${d.camera}: epoch ${d.epoch} belongs to ${holder}, detection seq ${seq} is from ${d.node}`);
    }
    return problems;
  }
}

/**
 * Names of the ordered consumers these checks read with start with this, so
 * the soak can tell them from the fleet's own. Each is deleted once read: an
 * ordered consumer otherwise stays on the server for its 5-minute inactivity
 * threshold, and a check that reads every 250 ms piles up hundreds.
 */
/** DetectionEvents stored after stream sequence `afterSeq`, in order (an ordered consumer from there to the end now). */
export async function readDetectionsAfter(nc: NatsConnection, afterSeq: number, timeoutMs = 10_000): Promise<StoredDetection[]> {
  const info = await (await jetstreamManager(nc)).streams.info(STREAMS.detections);
  if (info.state.last_seq <= afterSeq) return [];
  return readStreamToEnd(
    nc,
    STREAMS.detections,
    { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(afterSeq + 1, info.state.first_seq) },
    info.state.last_seq,
    (m) => ({ event: DetectionEventSchema.parse(m.json()), msgId: m.headers?.get(MSG_ID_HEADER), subject: m.subject, seq: m.seq }),
    timeoutMs,
  );
}

/**
 * StatusEvents stored from `sinceMs` on (ms since the epoch), in order: what a
 * fault's settle check needs, without reading the whole stream on every poll
 * (0: the whole stream).
 */
export async function readStatusEventsSince(nc: NatsConnection, sinceMs: number, timeoutMs = 10_000): Promise<StatusEvent[]> {
  const info = await (await jetstreamManager(nc)).streams.info(STREAMS.status);
  if (info.state.messages === 0 || Date.parse(info.state.last_ts) < sinceMs) return [];
  return readStreamToEnd(
    nc,
    STREAMS.status,
    { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(sinceMs).toISOString() },
    info.state.last_seq,
    (m) => StatusEventSchema.parse(m.json()),
    timeoutMs,
  );
}

// ---------------------------------------------------------------- FFmpeg processes

export interface FfmpegProcess {
  pid: number;
  ppid: number;
  /** The camera whose mount its command line reads, if any. */
  camera?: string;
}

/** FFmpeg processes reading from the RTSP server on `rtspPort` (this rig's, nobody else's). */
export function ffmpegProcesses(rtspPort: number, cameras: readonly string[]): FfmpegProcess[] {
  const out: FfmpegProcess[] = [];
  const needle = `127.0.0.1:${rtspPort}/`;
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const [state, ppid] = stat.slice(close + 2).split(" ");
      if (comm !== "ffmpeg" || state === "Z") continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      const url = args.find((a) => a.includes(needle));
      if (url === undefined) continue;
      const path = url.slice(url.indexOf(needle) + needle.length).split(/[/?]/)[0];
      out.push({ pid, ppid: Number(ppid), ...(cameras.includes(path!) ? { camera: path! } : {}) });
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/**
 * Every FFmpeg of the rig belongs to a live node that owns its camera now,
 * and no camera has two. `nodePids` maps the live nodes' pids to their ids.
 */
export function ffmpegViolations(procs: readonly FfmpegProcess[], nodePids: ReadonlyMap<number, string>, owners: ReadonlyMap<string, LeaseOwner>): string[] {
  const problems: string[] = [];
  const perCamera = new Map<string, number[]>();
  for (const p of procs) {
    const node = nodePids.get(p.ppid);
    if (node === undefined) {
      problems.push(`ffmpeg ${p.pid} (${p.camera ?? "?"}): its parent ${p.ppid} is no live node`);
      continue;
    }
    if (p.camera === undefined) continue;
    const owner = owners.get(p.camera);
    if (owner?.node !== node) problems.push(`ffmpeg ${p.pid} of ${p.camera} runs on ${node}, the camera is owned by ${owner?.node ?? "nobody"}`);
    perCamera.set(p.camera, [...(perCamera.get(p.camera) ?? []), p.pid]);
  }
  for (const [camera, pids] of perCamera) if (pids.length > 1) problems.push(`${camera}: ${pids.length} ffmpeg processes (${pids.join(", ")})`);
  return problems;
}
