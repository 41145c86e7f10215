import type { KV } from "@nats-io/kv";
import { headers, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import {
  CAMERAS_LIST_DEFAULT_LIMIT,
  CamfleetError,
  cameraIdOfControlSubject,
  CONTENT_TYPE_HEADER,
  SNAPSHOT_CONTENT_TYPE,
  CameraSpecSchema,
  CONTROL_QUEUE,
  control,
  ensureCamfleetError,
  EXPECTED_REVISION_HEADER,
  isLocalSource,
  kvKeys,
  parseOrThrow,
  redact,
  redactSpec,
  subjects,
  type CameraSpec,
  type CameraState,
  type ControlName,
  type Lease,
  type NodeInfo,
} from "../../subjects/index.ts";
import { isCasConflict } from "../infra/index.ts";
import type { ViewerReport } from "./kinds.ts";
import type { Logger } from "../logger.ts";
import type { NodeMetrics } from "../metrics.ts";
import { withDeadline } from "../deadline.ts";
import { cameraSpecOf, toCamfleetError } from "../infra/index.ts";

/** What the control service needs from its node. */
export interface ControlDeps {
  nc: NatsConnection;
  cameras: KV;
  node: string;
  allowLocalSources: boolean;
  /** AI settings a new camera gets when its spec does not say (AI_MAX_FPS, AI_PROCESS_EVERY_N, AI_TIMEOUT_MS). */
  aiDefaults: { max_fps: number; every_n?: number; timeout_ms: number };
  logger: Logger;
  metrics: NodeMetrics;
  /** Current lease of a camera, if it is held. */
  lease(camera: string): Lease | undefined;
  /** Every camera spec, as the node's watch of camfleet_cameras has it. */
  specs(): CameraSpec[];
  /** Live nodes. */
  nodes(): NodeInfo[];
  /** Last reported state of a camera, if known. */
  state(spec: CameraSpec): Promise<CameraState | undefined>;
  /** Hands every camera over; resolves with how many were released. */
  drain(): Promise<number>;
}

/** A handler must answer within this, ms, so a caller is never left waiting on a slow KV. */
const HANDLER_DEADLINE_MS = 4000;
/** What nats-server allows unless configured otherwise (max_payload, 1 MiB). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Room for `{"ok":true,"cameras":[…],"next":"…","total":N}` around a page's entries. */
const REPLY_ENVELOPE_BYTES = 1024;
/** Compare-and-set retries for read-modify-write of a spec. */
const CAS_ATTEMPTS = 5;

type Handler = (body: unknown, msg: Msg) => Promise<Record<string, unknown>>;

/**
 * Serves the control subjects of the contract (docs/contract.md). Subjects any node may answer use
 * one queue group, so each request is handled once. Every reply is
 * `{ok: true, …}` or `{ok: false, error: {code, message}}`; bad input changes
 * nothing.
 */
export function serveControl(deps: ControlDeps): { stop(): Promise<void> } {
  const subs: Subscription[] = [];
  // Requests being handled: stop() waits for their replies before the connection closes.
  const inFlight = new Set<Promise<void>>();
  const log = deps.logger.child({ component: "control" });

  const serve = (subject: string, op: ControlName, handler: Handler, queue: string | undefined = CONTROL_QUEUE) => {
    subs.push(
      deps.nc.subscribe(subject, {
        ...(queue !== undefined ? { queue } : {}),
        callback: (err, msg) => {
          if (err !== null) {
            log.error({ err, subject }, "control subscription failed");
            return;
          }
          const handling = handle(op, handler, msg);
          inFlight.add(handling);
          void handling.finally(() => inFlight.delete(handling));
        },
      }),
    );
  };

  const handle = async (op: ControlName, handler: Handler, msg: Msg) => {
    const started = performance.now();
    let outcome = "ok";
    let reply: Record<string, unknown>;
    try {
      const body = parseBody(msg);
      reply = {
        ok: true,
        ...(await withDeadline(handler(body, msg), HANDLER_DEADLINE_MS, op, {
          onTimeout: () => new CamfleetError("UNAVAILABLE", `the cluster did not answer within ${HANDLER_DEADLINE_MS} ms; retry`),
        })),
      };
    } catch (err) {
      const e = toCamfleetError(err, "the cluster");
      outcome = e.code;
      if (e.code === "INTERNAL") log.error({ err, op }, "control request failed");
      reply = { ok: false, error: e.toJSON() };
    }
    if (!respondSafely(deps.nc, msg, reply, log)) outcome = "PAYLOAD_TOO_LARGE";
    deps.metrics.controlLatency.observe({ op, outcome }, (performance.now() - started) / 1000);
  };

  const maxPayload = () => deps.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;

  const getSpec = async (id: string): Promise<{ spec: CameraSpec; revision: number } | undefined> => {
    const entry = await deps.cameras.get(kvKeys.camera(id));
    const spec = cameraSpecOf(entry);
    return spec === undefined || entry === null ? undefined : { spec, revision: entry.revision };
  };

  const checkSource = (spec: CameraSpec) => {
    if (isLocalSource(spec.url) && !deps.allowLocalSources) {
      throw new CamfleetError("INVALID_ARGUMENT", "invalid CameraSpec: url: file: and testsrc: sources need ALLOW_LOCAL_SOURCES on the nodes");
    }
  };

  /** Read-modify-write of one spec with compare-and-set, retried on conflict. */
  const modify = async (id: string, change: (current: CameraSpec | undefined) => CameraSpec): Promise<{ spec: CameraSpec; revision: number }> => {
    for (let attempt = 1; ; attempt++) {
      const current = await getSpec(id);
      const next = change(current?.spec);
      checkSource(next);
      try {
        const revision =
          current === undefined
            ? await deps.cameras.create(kvKeys.camera(id), JSON.stringify(next))
            : await deps.cameras.update(kvKeys.camera(id), JSON.stringify(next), current.revision);
        return { spec: next, revision };
      } catch (err) {
        if (!isCasConflict(err) || attempt >= CAS_ATTEMPTS) {
          throw isCasConflict(err) ? new CamfleetError("CONFLICT", `camera ${id} is being changed concurrently; retry`) : err;
        }
      }
    }
  };

  const cameraFromSubject = (msg: Msg): string => {
    const id = cameraIdOfControlSubject(msg.subject);
    // The wildcard lets any token through; validate it like any other id.
    return kvKeys.camera(id ?? "");
  };

  /**
   * The node's AI defaults under what the caller's spec leaves out, so
   * AI_MAX_FPS and friends apply to cameras created without them (the
   * schema's own defaults would otherwise always win). Stored specs stay complete.
   */
  const withAiDefaults = (raw: unknown): unknown => {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return raw;
    const ai = (raw as { ai?: unknown }).ai;
    if (ai !== undefined && (typeof ai !== "object" || ai === null || Array.isArray(ai))) return raw; // let the schema say what is wrong
    const given = (ai ?? {}) as Record<string, unknown>;
    // every_n is the alternative to max_fps: a caller who sets max_fps does not get the node's every_n.
    const { every_n, ...rate } = deps.aiDefaults;
    const defaults = given.max_fps === undefined && every_n !== undefined ? { ...rate, every_n } : rate;
    return { ...raw, ai: { ...defaults, ...given } };
  };

  serve(subjects.ctl.camerasPut, "camerasPut", async (body, msg) => {
    const expected = expectedRevision(msg);
    let spec = parseOrThrow(control.camerasPut.request, withAiDefaults(body), "CameraSpec");
    checkSource(spec);
    const key = kvKeys.camera(spec.id);
    // A spec read from a reply and written back carries the redacted URL: keep the stored one, credentials and all.
    if (spec.url.includes("***")) {
      const stored = await getSpec(spec.id);
      if (stored !== undefined && redact(stored.spec.url) === spec.url) spec = { ...spec, url: stored.spec.url };
    }
    const value = JSON.stringify(spec);
    let revision: number;
    try {
      revision =
        expected === undefined
          ? await deps.cameras.put(key, value)
          : expected === 0
            ? await deps.cameras.create(key, value)
            : await deps.cameras.update(key, value, expected);
    } catch (err) {
      if (expected === undefined || !isCasConflict(err)) throw err;
      throw expected === 0
        ? new CamfleetError("CONFLICT", `camera ${spec.id} exists already`)
        : new CamfleetError("PRECONDITION_FAILED", `camera ${spec.id} is no longer at revision ${expected}; re-read it and retry`);
    }
    return { camera: redactSpec(spec), revision };
  });

  serve(subjects.ctl.camerasGet, "camerasGet", async (body) => {
    const { id } = parseOrThrow(control.camerasGet.request, body, "request");
    const found = await getSpec(id);
    if (found === undefined) throw new CamfleetError("NOT_FOUND", `no camera ${id}`);
    const lease = deps.lease(id);
    return { camera: redactSpec(found.spec), ...(lease !== undefined ? { lease } : {}), revision: found.revision };
  });

  serve(subjects.ctl.camerasList, "camerasList", async (body) => {
    const req = parseOrThrow(control.camerasList.request, body, "request");
    // The node already watches every spec: list from that, not one KV read per camera.
    const matching = deps
      .specs()
      .filter((spec) => (req.tenant === undefined || spec.tenant === req.tenant) && (req.site === undefined || spec.site === req.site));
    matching.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    // Ids are unique and sorted: the page starts after the cursor, whether or not that camera still exists.
    const start = req.after === undefined ? 0 : matching.findIndex((spec) => spec.id > req.after!);
    const candidates = start < 0 ? [] : matching.slice(start, start + (req.limit ?? CAMERAS_LIST_DEFAULT_LIMIT));
    const entries = await Promise.all(
      candidates.map(async (spec) => {
        const owner = deps.lease(spec.id)?.node;
        const state = owner !== undefined ? await deps.state(spec).catch(() => undefined) : undefined;
        return { camera: redactSpec(spec), ...(owner !== undefined ? { owner } : {}), ...(state !== undefined ? { state } : {}) };
      }),
    );
    // Specs are bounded (~25 KB at most), but a page of them may not be: cut it where the next entry would not fit one message.
    const budget = maxPayload() - REPLY_ENVELOPE_BYTES;
    const cameras: typeof entries = [];
    let bytes = 0;
    for (const entry of entries) {
      const size = Buffer.byteLength(JSON.stringify(entry)) + 1;
      if (cameras.length > 0 && bytes + size > budget) break;
      cameras.push(entry);
      bytes += size;
    }
    const last = cameras.at(-1)?.camera.id;
    const more = start >= 0 && start + cameras.length < matching.length;
    return { cameras, ...(more && last !== undefined ? { next: last } : {}), total: matching.length };
  });

  serve(subjects.ctl.camerasDelete, "camerasDelete", async (body, msg) => {
    const expected = expectedRevision(msg);
    const { id } = parseOrThrow(control.camerasDelete.request, body, "request");
    const found = await getSpec(id);
    if (found === undefined) throw new CamfleetError("NOT_FOUND", `no camera ${id}`);
    if (expected === undefined) {
      await deps.cameras.delete(kvKeys.camera(id));
      return {};
    }
    try {
      await deps.cameras.delete(kvKeys.camera(id), { previousSeq: expected });
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      throw new CamfleetError("PRECONDITION_FAILED", `camera ${id} is no longer at revision ${expected}; re-read it and retry`);
    }
    return {};
  });

  serve(subjects.ctl.cameraStartAny, "cameraStart", async (body, msg) => {
    const id = cameraFromSubject(msg);
    const patch = parseOrThrow(control.cameraStart.request, body, "CameraSpec patch");
    const { spec, revision } = await modify(id, (current) => {
      if (current === undefined && patch.url === undefined) {
        throw new CamfleetError("INVALID_ARGUMENT", `invalid CameraSpec patch: url: is required to start camera ${id}, which does not exist yet`);
      }
      const merged = { ...(current ?? {}), ...patch, ai: { ...(current?.ai ?? {}), ...(patch.ai ?? {}) }, id, enabled: true };
      return parseOrThrow(CameraSpecSchema, current === undefined ? withAiDefaults(merged) : merged, "CameraSpec");
    });
    return { camera: redactSpec(spec), revision };
  });

  serve(subjects.ctl.cameraStopAny, "cameraStop", async (body, msg) => {
    const id = cameraFromSubject(msg);
    parseOrThrow(control.cameraStop.request, body, "request");
    const { spec, revision } = await modify(id, (current) => {
      if (current === undefined) throw new CamfleetError("NOT_FOUND", `no camera ${id}`);
      return { ...current, enabled: false };
    });
    return { camera: redactSpec(spec), revision };
  });

  serve(subjects.ctl.nodesList, "nodesList", async (body) => {
    parseOrThrow(control.nodesList.request, body, "request");
    return { nodes: deps.nodes().sort((a, b) => (a.node < b.node ? -1 : 1)) };
  });

  serve(
    subjects.ctl.nodeDrain(deps.node),
    "nodeDrain",
    async (body) => {
      parseOrThrow(control.nodeDrain.request, body, "request");
      return { released: await deps.drain() };
    },
    undefined,
  );

  return {
    // Drain, never unsubscribe: the queue group's other members take new
    // requests at once, and the ones this node already took are answered.
    stop: async () => {
      await Promise.all(subs.map((sub) => sub.drain().catch(() => undefined)));
      await Promise.allSettled([...inFlight]);
    },
  };
}

/** Serves `camera.<id>.status` for one camera this node runs. */
export function serveCameraStatus(nc: NatsConnection, camera: string, status: () => Record<string, unknown>, logger: Logger): Subscription {
  return nc.subscribe(subjects.ctl.cameraStatus(camera), {
    callback: (err, msg) => {
      if (err !== null) return;
      let reply: Record<string, unknown>;
      try {
        parseOrThrow(control.cameraStatus.request, parseBody(msg), "request");
        reply = { ok: true, ...status() };
      } catch (e) {
        const ce = ensureCamfleetError(e);
        if (ce.code === "INTERNAL") logger.error({ err: e, camera }, "camera status failed");
        reply = { ok: false, error: ce.toJSON() };
      }
      respondSafely(nc, msg, reply, logger);
    },
  });
}

/** Serves `camera.<id>.viewers` for one camera this node runs: a gateway's viewer count goes to the actor. */
export function serveCameraViewers(nc: NatsConnection, camera: string, viewers: (report: ViewerReport) => number, logger: Logger): Subscription {
  return nc.subscribe(subjects.ctl.cameraViewers(camera), {
    callback: (err, msg) => {
      if (err !== null) return;
      let reply: Record<string, unknown>;
      try {
        const req = parseOrThrow(control.cameraViewers.request, parseBody(msg), "viewer report");
        reply = { ok: true, viewers: viewers({ gateway: req.gateway, viewers: req.viewers, ttlMs: req.ttl_ms }) };
      } catch (e) {
        const ce = ensureCamfleetError(e);
        if (ce.code === "INTERNAL") logger.error({ err: e, camera }, "viewer report failed");
        reply = { ok: false, error: ce.toJSON() };
      }
      respondSafely(nc, msg, reply, logger);
    },
  });
}

/**
 * Sends a reply, never throwing: a responder that threw would take its node
 * down, and the next node to answer the same request would follow. A reply
 * larger than the server's max_payload is replaced by a small
 * PAYLOAD_TOO_LARGE error; a failed send is logged. Returns false when the
 * caller got an error in place of its reply.
 */
export function respondSafely(nc: NatsConnection, msg: Msg, reply: Record<string, unknown>, logger: Logger): boolean {
  if (msg.reply === undefined || msg.reply === "") return true;
  let data = JSON.stringify(reply);
  const max = nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
  let sent = true;
  if (Buffer.byteLength(data) > max) {
    logger.warn({ subject: msg.subject, bytes: Buffer.byteLength(data), maxPayload: max }, "control reply larger than max_payload: answering PAYLOAD_TOO_LARGE");
    data = JSON.stringify({
      ok: false,
      error: new CamfleetError("PAYLOAD_TOO_LARGE", `the reply (${Buffer.byteLength(data)} bytes) is larger than the NATS server's max_payload (${max} bytes)`).toJSON(),
    });
    sent = false;
  }
  try {
    msg.respond(data);
  } catch (err) {
    logger.error({ err, subject: msg.subject }, "sending a control reply failed");
    return false;
  }
  return sent;
}

/**
 * Serves `camera.<id>.snapshot` for one camera this node runs. A success is
 * the JPEG itself with `Content-Type: image/jpeg`; a failure the usual JSON
 * `{ok: false, error}`. A JPEG larger than the server's max_payload is
 * answered PAYLOAD_TOO_LARGE (respond() would throw inside this callback).
 */
export function serveCameraSnapshot(
  nc: NatsConnection,
  camera: string,
  snapshot: (width?: number) => Promise<Buffer>,
  deps: { logger: Logger; metrics: NodeMetrics },
): Subscription {
  const answer = async (msg: Msg) => {
    let outcome = "ok";
    try {
      const req = parseOrThrow(control.cameraSnapshot.request, parseBody(msg), "snapshot request");
      const jpeg = await snapshot(req.width);
      // Room for the reply subject and the header block next to the JPEG.
      const limit = nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
      if (jpeg.length + 1024 > limit) {
        throw new CamfleetError("PAYLOAD_TOO_LARGE", `the snapshot of camera ${camera} is ${jpeg.length} bytes, more than this NATS server carries (max_payload ${limit}); ask for a smaller width`);
      }
      const h = headers();
      h.set(CONTENT_TYPE_HEADER, SNAPSHOT_CONTENT_TYPE);
      msg.respond(jpeg, { headers: h });
    } catch (e) {
      const ce = ensureCamfleetError(e);
      outcome = ce.code;
      if (ce.code === "INTERNAL") deps.logger.error({ err: e, camera }, "camera snapshot failed");
      respondSafely(nc, msg, { ok: false, error: ce.toJSON() }, deps.logger);
    } finally {
      deps.metrics.snapshotRequests.inc({ outcome });
    }
  };
  return nc.subscribe(subjects.ctl.cameraSnapshot(camera), {
    callback: (err, msg) => {
      if (err !== null || msg.reply === undefined || msg.reply === "") return;
      void answer(msg);
    },
  });
}

/** The revision a write must find (EXPECTED_REVISION_HEADER), if the request names one. */
function expectedRevision(msg: Msg): number | undefined {
  const raw = msg.headers?.get(EXPECTED_REVISION_HEADER);
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,15}$/.test(raw)) throw new CamfleetError("INVALID_ARGUMENT", `header ${EXPECTED_REVISION_HEADER}: must be a KV revision (a whole number), got ${JSON.stringify(raw.slice(0, 32))}`);
  return Number(raw);
}

function parseBody(msg: Msg): unknown {
  if (msg.data.length === 0) return {};
  try {
    return msg.json();
  } catch {
    throw new CamfleetError("INVALID_ARGUMENT", "request body is not valid JSON");
  }
}

