import { assertId, DEFAULT_SITE, DEFAULT_TENANT, isValidId } from "./ids.ts";

/**
 * Every subject, stream, KV bucket and queue group camfleet uses. Nothing
 * outside subjects/ spells one of these strings by hand. Builders validate
 * each token, so a bad id fails with INVALID_ARGUMENT before it reaches NATS.
 */

export const PREFIX = "camfleet";

export const STREAMS = {
  status: "CAMFLEET_STATUS",
  detections: "CAMFLEET_DETECTIONS",
  /**
   * Prefix of the throwaway streams that measure how much room the JetStream
   * store has left (runtime/infra/jetstream-room.ts): each is deleted at once.
   */
  probePrefix: "CAMFLEET_PROBE_",
} as const;

export const BUCKETS = {
  cameras: "camfleet_cameras",
  leases: "camfleet_leases",
  nodes: "camfleet_nodes",
  /** Which gateway holds the media relay of a camera (its WHIP publisher and WHEP viewers). */
  relays: "camfleet_relays",
} as const;

/** Queue group for control subjects that any node may answer. */
export const CONTROL_QUEUE = "camfleet-ctl";

/** Header JetStream uses to de-duplicate publishes. */
export const MSG_ID_HEADER = "Nats-Msg-Id";
/**
 * Header of a `cameras.put` or `cameras.delete` request that makes the write
 * revision-checked: the camera's KV revision must still be this (0: the
 * camera must not exist yet), else PRECONDITION_FAILED. The gateway's If-Match.
 */
export const EXPECTED_REVISION_HEADER = "Camfleet-Expected-Revision";
/**
 * A `camera.<id>.snapshot` reply that succeeded carries the JPEG as its body
 * with this header (`Content-Type: image/jpeg`); a failure is the usual JSON
 * `{ok: false, error}` without it.
 */
export const CONTENT_TYPE_HEADER = "Content-Type";
export const SNAPSHOT_CONTENT_TYPE = "image/jpeg";

/**
 * HTTP headers of a node's WHIP publish: who publishes, under which lease
 * epoch. The relay lets a camera's owner publish (and refuses an older
 * epoch); a publisher without them is an external source, let through only
 * while no node holds the camera's lease.
 */
export const PUBLISHER_NODE_HEADER = "Camfleet-Node";
export const PUBLISHER_EPOCH_HEADER = "Camfleet-Epoch";

export interface Scope {
  tenant?: string;
  site?: string;
  camera?: string;
}

function eventSubject(kind: "status" | "det", tenant: string, site: string, camera: string): string {
  return `${PREFIX}.${kind}.${assertId("tenant", tenant)}.${assertId("site", site)}.${assertId("camera", camera)}`;
}

/** A filter over an event stream; unset parts match anything. */
function eventFilter(kind: "status" | "det", scope: Scope = {}): string {
  const token = (k: "tenant" | "site" | "camera") => {
    const v = scope[k];
    return v === undefined ? "*" : assertId(k, v);
  };
  return `${PREFIX}.${kind}.${token("tenant")}.${token("site")}.${token("camera")}`;
}

export const subjects = {
  /** camfleet.status.<tenant>.<site>.<camera> */
  status: (camera: string, tenant = DEFAULT_TENANT, site = DEFAULT_SITE) => eventSubject("status", tenant, site, camera),
  /** camfleet.det.<tenant>.<site>.<camera> */
  detections: (camera: string, tenant = DEFAULT_TENANT, site = DEFAULT_SITE) => eventSubject("det", tenant, site, camera),
  statusFilter: (scope?: Scope) => eventFilter("status", scope),
  detectionsFilter: (scope?: Scope) => eventFilter("det", scope),
  /** All subjects a stream captures. */
  statusAll: `${PREFIX}.status.>`,
  detectionsAll: `${PREFIX}.det.>`,
  /** The one subject of a room probe stream (nothing is ever published there). */
  probe: (token: string) => {
    if (!isValidId(token)) throw new RangeError(`probe token ${JSON.stringify(token)} is not one subject token`);
    return `${PREFIX}.probe.${token}`;
  },

  ctl: {
    camerasPut: `${PREFIX}.ctl.cameras.put`,
    camerasGet: `${PREFIX}.ctl.cameras.get`,
    camerasList: `${PREFIX}.ctl.cameras.list`,
    camerasDelete: `${PREFIX}.ctl.cameras.delete`,
    nodesList: `${PREFIX}.ctl.nodes.list`,
    cameraStart: (camera: string) => `${PREFIX}.ctl.camera.${assertId("camera", camera)}.start`,
    cameraStop: (camera: string) => `${PREFIX}.ctl.camera.${assertId("camera", camera)}.stop`,
    cameraStatus: (camera: string) => `${PREFIX}.ctl.camera.${assertId("camera", camera)}.status`,
    /** A gateway's count of WHEP viewers of a camera, to the camera's owner (on-demand publishing). */
    cameraViewers: (camera: string) => `${PREFIX}.ctl.camera.${assertId("camera", camera)}.viewers`,
    /** The owner's latest frame of a camera as a JPEG (the reply is the JPEG itself, see SNAPSHOT_CONTENT_TYPE). */
    cameraSnapshot: (camera: string) => `${PREFIX}.ctl.camera.${assertId("camera", camera)}.snapshot`,
    nodeDrain: (node: string) => `${PREFIX}.ctl.node.${assertId("node", node)}.drain`,
    /** Each node answers here while it is connected; "no responders" says it is not (fast failover, docs/architecture.md). */
    nodePresence: (node: string) => `${PREFIX}.ctl.node.${assertId("node", node)}.presence`,
    /** The node's own second connection answers here, from another server: a route between the two works (runtime/node/witness.ts). */
    nodeWitness: (node: string) => `${PREFIX}.ctl.node.${assertId("node", node)}.witness`,
    /** Wildcards a node subscribes to; the id token is validated on receipt. */
    cameraStartAny: `${PREFIX}.ctl.camera.*.start`,
    cameraStopAny: `${PREFIX}.ctl.camera.*.stop`,
  },
} as const;

export type EventKind = "status" | "det";

/** Splits an event subject back into its parts; undefined if it is not one. */
export function parseEventSubject(subject: string): { kind: EventKind; tenant: string; site: string; camera: string } | undefined {
  const parts = subject.split(".");
  if (parts.length !== 5 || parts[0] !== PREFIX) return undefined;
  const [, kind, tenant, site, camera] = parts as [string, string, string, string, string];
  if (kind !== "status" && kind !== "det") return undefined;
  return { kind, tenant, site, camera };
}

/** The camera id in a `camfleet.ctl.camera.<id>.<verb>` subject. */
export function cameraIdOfControlSubject(subject: string): string | undefined {
  const parts = subject.split(".");
  if (parts.length !== 5 || parts[0] !== PREFIX || parts[1] !== "ctl" || parts[2] !== "camera") return undefined;
  return parts[3];
}

/** KV keys are the ids themselves; validated so a bad id never becomes a key. */
export const kvKeys = {
  camera: (camera: string) => assertId("camera", camera),
  lease: (camera: string) => assertId("camera", camera),
  node: (node: string) => assertId("node", node),
  relay: (camera: string) => assertId("camera", camera),
} as const;

/** JetStream message id for a detection: the same frame retried is one message. */
export function detectionMsgId(camera: string, epoch: number, frameId: number | string): string {
  return `${assertId("camera", camera)}:${epoch}:${frameId}`;
}
