import { z } from "zod";
import { CAMERA_ERROR_CODE_NAMES, CamfleetError, CONTROL_ERROR_CODE_NAMES } from "./errors.ts";
import { DEFAULT_SITE, DEFAULT_TENANT, IdSchema } from "./ids.ts";
import { redact } from "./redact.ts";

/**
 * zod schemas for every message, KV value and HTTP body in docs/contract.md.
 * Conventions: every `*_ts` is milliseconds since the Unix epoch; requests are
 * strict (an unknown field is an error, so a typo never passes silently);
 * events and KV values are loose, so older readers accept newer writers.
 */

const Millis = z.number().int().nonnegative();
const Epoch = z.number().int().nonnegative();

// ---------------------------------------------------------------- CameraSpec

/** Schemes any node accepts. */
export const REMOTE_SCHEMES = ["rtsp", "rtsps", "http", "https", "srt", "udp"] as const;
/** Schemes that read the node's own machine; only with ALLOW_LOCAL_SOURCES. */
export const LOCAL_SCHEMES = ["file", "testsrc"] as const;

export function schemeOf(url: string): string | undefined {
  const m = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  return m?.[1]?.toLowerCase();
}

export function isLocalSource(url: string): boolean {
  return (LOCAL_SCHEMES as readonly string[]).includes(schemeOf(url) ?? "");
}

const SourceUrl = z
  .string()
  .min(1, "must not be empty")
  .max(2048, "must be at most 2048 characters")
  .refine((u) => {
    const scheme = schemeOf(u);
    return scheme !== undefined && ([...REMOTE_SCHEMES, ...LOCAL_SCHEMES] as string[]).includes(scheme);
  }, `must be a URL with scheme ${[...REMOTE_SCHEMES, ...LOCAL_SCHEMES].join(", ")}`)
  .refine((u) => URL.canParse(u), "is not a valid URL")
  .refine((u) => isLocalSource(u) || (URL.canParse(u) && new URL(u).hostname !== ""), "must name a host");

const SolutionName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'");

const aiFields = {
  enabled: z.boolean(),
  /** Frames per second sent for analysis at most. */
  max_fps: z.number().positive().max(60),
  /** Analyse every n-th frame instead of a rate (the single-worker AI_PROCESS_EVERY_N). */
  every_n: z.number().int().positive().max(10_000).optional(),
  /** Deadline of one detector call, in ms. */
  timeout_ms: z.number().int().min(10).max(60_000),
  /** Skip frames without motion before calling the detector. */
  motion_gate: z.boolean(),
  /** Model solutions (person_detection, object_detection): boxes scoring below this are dropped; unset = the detector's default. */
  min_score: z.number().min(0).max(1).optional(),
  /** object_detection reports only these classes (e.g. "car", "dog"); unset or empty = all. */
  labels: z.array(z.string().min(1).max(64)).max(100).optional(),
  /** Non-maximum suppression IoU: of two overlapping boxes the weaker is dropped above this; unset = the detector's default. */
  nms_iou: z.number().min(0).max(1).optional(),
};

export const AiSettingsSchema = z.strictObject({
  ...aiFields,
  enabled: aiFields.enabled.default(false),
  max_fps: aiFields.max_fps.default(1),
  timeout_ms: aiFields.timeout_ms.default(2000),
  motion_gate: aiFields.motion_gate.default(true),
});

/**
 * Bounds of a spec, so that any spec, and a page of a list, fits a NATS message
 * (max_payload, 1 MiB by default) with room to spare: at most ~25 KB each.
 */
export const MAX_LABELS = 64;

const cameraSpecFields = {
  url: SourceUrl,
  name: z.string().max(200).optional(),
  tenant: IdSchema,
  site: IdSchema,
  enabled: z.boolean(),
  solutions: z.array(SolutionName).max(32),
  publish: z.enum(["on-demand", "always", "off"]),
  rtsp_transport: z.enum(["tcp", "udp"]),
  /** Re-encode a source that is not H.264 (H.265, MJPEG, …) to H.264; off, such a source is UNSUPPORTED_CODEC. H.264 is always copied. */
  transcode: z.boolean(),
  ai: z.strictObject(aiFields),
  labels: z
    .record(z.string().max(64), z.string().max(256))
    .refine((labels) => Object.keys(labels).length <= MAX_LABELS, `must have at most ${MAX_LABELS} entries`)
    .optional(),
};

/** Desired state of one camera; the value in KV bucket camfleet_cameras. */
export const CameraSpecSchema = z.strictObject({
  id: IdSchema,
  ...cameraSpecFields,
  tenant: IdSchema.default(DEFAULT_TENANT),
  site: IdSchema.default(DEFAULT_SITE),
  enabled: z.boolean().default(true),
  solutions: z.array(SolutionName).max(32).default([]),
  publish: z.enum(["on-demand", "always", "off"]).default("on-demand"),
  rtsp_transport: z.enum(["tcp", "udp"]).default("tcp"),
  transcode: z.boolean().default(false),
  ai: AiSettingsSchema.prefault({}),
});
export type CameraSpec = z.output<typeof CameraSpecSchema>;
export type CameraSpecInput = z.input<typeof CameraSpecSchema>;

/** A partial spec, as `camera.<id>.start` takes; merged over the stored one. */
export const CameraSpecPatchSchema = z.strictObject({
  ...cameraSpecFields,
  ai: z.strictObject(aiFields).partial(),
}).partial();
export type CameraSpecPatch = z.output<typeof CameraSpecPatchSchema>;

/** The spec as it may leave the cluster: credentials in the URL redacted. */
export function redactSpec(spec: CameraSpec): CameraSpec {
  return { ...spec, url: redact(spec.url) };
}

// ---------------------------------------------------------------- KV values

export const LeaseSchema = z.object({
  camera: IdSchema,
  node: IdSchema,
  /** Revision of the claim: a fencing token that only grows. */
  epoch: Epoch,
  acquired_ts: Millis,
  renewed_ts: Millis,
});
export type Lease = z.output<typeof LeaseSchema>;

export const NodeInfoSchema = z.object({
  node: IdSchema,
  version: z.string(),
  started_ts: Millis,
  heartbeat_ts: Millis,
  /** MAX_CAMERAS of the node. */
  capacity: z.number().int().nonnegative(),
  /** Number of cameras the node runs now. */
  cameras: z.number().int().nonnegative(),
  http_url: z.string().optional(),
  /** A draining node hands its cameras over and claims no more. */
  draining: z.boolean().optional(),
  /** CPU the node process used since its previous heartbeat, in % of one core (as built). */
  cpu_percent: z.number().nonnegative().optional(),
  /** Resident memory of the node process, bytes (as built). FFmpeg children are not counted. */
  rss_bytes: z.number().int().nonnegative().optional(),
});
export type NodeInfo = z.output<typeof NodeInfoSchema>;

/**
 * The value in KV bucket camfleet_relays: the gateway that holds a camera's
 * media relay. Claimed with create, renewed with update at the last
 * revision; stale once `renewed_ts` is older than the gateways' relay TTL.
 */
export const RelaySchema = z.object({
  camera: IdSchema,
  /** Id of the holding gateway (its NODE_ID). */
  gateway: IdSchema,
  /** Public base URL of the holding gateway (GATEWAY_URL), e.g. http://10.0.0.7:8080. */
  url: z.string(),
  claimed_ts: Millis,
  renewed_ts: Millis,
  /** A WHIP publisher is connected there now. */
  publishing: z.boolean(),
  viewers: z.number().int().nonnegative(),
});
export type Relay = z.output<typeof RelaySchema>;

// ---------------------------------------------------------------- events

export const CAMERA_STATES = ["STOPPED", "CONNECTING", "STREAMING", "ERROR"] as const;
export const CameraStateSchema = z.enum(CAMERA_STATES);
export type CameraState = z.output<typeof CameraStateSchema>;

export const StreamInfoSchema = z.object({
  codec: z.string(),
  width: z.number().int().nonnegative(),
  height: z.number().int().nonnegative(),
  fps: z.number().nonnegative(),
});
export type StreamInfo = z.output<typeof StreamInfoSchema>;

export const CameraErrorSchema = z.object({
  code: z.enum(CAMERA_ERROR_CODE_NAMES),
  detail: z.string(),
  attempt: z.number().int().nonnegative(),
  retry_in_ms: z.number().int().nonnegative(),
});
export type CameraError = z.output<typeof CameraErrorSchema>;

const eventOrigin = {
  camera: IdSchema,
  tenant: IdSchema,
  site: IdSchema,
  node: IdSchema,
  epoch: Epoch,
};

/**
 * Why a camera changed owner: `failover` (its owner died or fenced itself and
 * the lease was taken over), `drain` (the owner left: drain or shutdown),
 * `rebalance` (placement moved it to a better node).
 */
export const OwnerChangeReasonSchema = z.enum(["failover", "drain", "rebalance"]);
export type OwnerChangeReason = z.output<typeof OwnerChangeReasonSchema>;

export const StatusEventSchema = z.object({
  type: z.literal("status"),
  ...eventOrigin,
  state: CameraStateSchema,
  trigger: z.enum(["edge", "periodic"]),
  ts: Millis,
  stream: StreamInfoSchema.optional(),
  last_frame_ts: Millis.optional(),
  last_frame_age_s: z.number().nonnegative().optional(),
  publishing: z.boolean().optional(),
  viewers: z.number().int().nonnegative().optional(),
  error: CameraErrorSchema.optional(),
  /** On the new owner's first event after a move: the node that had the camera. */
  previous_node: IdSchema.optional(),
  /** On that first event, and on the old owner's STOPPED when it hands the camera over (drain, rebalance). */
  reason: OwnerChangeReasonSchema.optional(),
});
export type StatusEvent = z.output<typeof StatusEventSchema>;

export const BoxSchema = z.object({
  x: z.number().min(0).max(1),
  y: z.number().min(0).max(1),
  w: z.number().min(0).max(1),
  h: z.number().min(0).max(1),
});

export const DetectionSchema = z.object({
  label: z.string(),
  score: z.number().min(0).max(1),
  box: BoxSchema,
});
export type Detection = z.output<typeof DetectionSchema>;

export const DetectionEventSchema = z.object({
  type: z.literal("detection"),
  id: z.string(),
  ...eventOrigin,
  frame_id: z.number().int().nonnegative(),
  frame_ts: Millis,
  ts: Millis,
  solutions: z.array(z.string()),
  detections: z.array(DetectionSchema),
  motion: z.object({ score: z.number().nonnegative() }).optional(),
  latency: z.object({ inference_ms: z.number().nonnegative(), e2e_ms: z.number().nonnegative() }),
});
export type DetectionEvent = z.output<typeof DetectionEventSchema>;

export const CameraStatusSchema = z.object({
  camera: IdSchema,
  node: IdSchema,
  epoch: Epoch,
  state: CameraStateSchema,
  since_ts: Millis,
  stream: StreamInfoSchema.optional(),
  last_frame_ts: Millis.optional(),
  frames: z.object({
    received: z.number().int().nonnegative(),
    sent_ai: z.number().int().nonnegative(),
    skipped_motion: z.number().int().nonnegative(),
    detections: z.number().int().nonnegative(),
  }),
  avg_inference_ms: z.number().nonnegative().optional(),
  /** DetectionEvents this camera could not hand to JetStream: the node's publish buffer was full while NATS was away. */
  detections_dropped: z.number().int().nonnegative().optional(),
  publishing: z.boolean(),
  viewers: z.number().int().nonnegative(),
  whip: z.object({ session_url: z.string().optional(), uptime_s: z.number().nonnegative().optional() }).optional(),
  error: CameraErrorSchema.optional(),
});
export type CameraStatus = z.output<typeof CameraStatusSchema>;

// ---------------------------------------------------------------- control

export const ErrorBodySchema = z.object({
  code: z.enum(CONTROL_ERROR_CODE_NAMES),
  message: z.string(),
});

export const ErrorReplySchema = z.object({ ok: z.literal(false), error: ErrorBodySchema });
export type ErrorReply = z.output<typeof ErrorReplySchema>;

/** `{ok: true, …fields}` or `{ok: false, error}`. */
function reply<S extends z.ZodRawShape>(shape: S) {
  return z.discriminatedUnion("ok", [z.object({ ok: z.literal(true), ...shape }), ErrorReplySchema]);
}

const IdRequest = z.strictObject({ id: IdSchema });
/** Widths a snapshot may be asked for, pixels: 16 (a thumbnail) .. 3840 (4K). */
export const SNAPSHOT_WIDTH = { min: 16, max: 3840 } as const;
/** Frames per second an MJPEG feed may ask for (`?fps=`); the default is 1. */
export const FEED_FPS = { min: 0.1, max: 5, default: 1 } as const;
/** The API token, for an <img src> that cannot set a header; checked by the gateway before the route. */
const ApiTokenQuery = z.string().optional();
/** `?width=` as a query string: digits only, then the snapshot's bounds. */
const WidthQuery = z
  .string()
  .regex(/^\d{1,5}$/, "must be a whole number of pixels")
  .transform(Number)
  .pipe(z.number().int().min(SNAPSHOT_WIDTH.min).max(SNAPSHOT_WIDTH.max));
/** KV revision of the camera's spec as written or read (the HTTP ETag); optional so older nodes' replies still parse. */
const Revision = z.number().int().positive().optional();
const Empty = z.strictObject({});

/** Cameras in one `cameras.list` page unless the request asks for fewer, and the most it may ask for. */
export const CAMERAS_LIST_DEFAULT_LIMIT = 100;
export const CAMERAS_LIST_MAX_LIMIT = 1000;

/** Request and reply schema of every control subject, by name. */
export const control = {
  camerasPut: { request: CameraSpecSchema, reply: reply({ camera: CameraSpecSchema, revision: Revision }) },
  camerasGet: { request: IdRequest, reply: reply({ camera: CameraSpecSchema, lease: LeaseSchema.optional(), revision: Revision }) },
  /**
   * One page of cameras in id order. `after` is the `next` of the previous
   * page; no `next` means this was the last page. A page holds at most
   * `limit` cameras, and fewer when more would not fit one NATS message.
   * `total` counts every camera matching the filter (as built).
   */
  camerasList: {
    request: z.strictObject({
      tenant: IdSchema.optional(),
      site: IdSchema.optional(),
      limit: z.number().int().min(1).max(CAMERAS_LIST_MAX_LIMIT).optional(),
      after: IdSchema.optional(),
    }),
    reply: reply({
      cameras: z.array(z.object({ camera: CameraSpecSchema, owner: IdSchema.optional(), state: CameraStateSchema.optional() })),
      next: IdSchema.optional(),
      total: z.number().int().nonnegative().optional(),
    }),
  },
  camerasDelete: { request: IdRequest, reply: reply({}) },
  cameraStart: { request: CameraSpecPatchSchema, reply: reply({ camera: CameraSpecSchema, revision: Revision }) },
  cameraStop: { request: Empty, reply: reply({ camera: CameraSpecSchema, revision: Revision }) },
  cameraStatus: { request: Empty, reply: reply(CameraStatusSchema.shape) },
  /**
   * `camera.<id>.viewers`: one gateway's count of WHEP viewers of the camera
   * (waiting ones included). The owner keeps each gateway's count for
   * `ttl_ms` unless it is sent again, so a dead gateway never keeps a camera
   * publishing. Replies with the camera's total over all gateways.
   */
  cameraViewers: {
    request: z.strictObject({
      gateway: IdSchema,
      viewers: z.number().int().nonnegative().max(1_000_000),
      ttl_ms: z.number().int().min(1_000).max(600_000),
    }),
    reply: reply({ viewers: z.number().int().nonnegative() }),
  },
  /**
   * `camera.<id>.snapshot`: the owner's latest frame as a JPEG. A success is
   * not JSON: its body is the JPEG, with `Content-Type: image/jpeg`
   * (SNAPSHOT_CONTENT_TYPE); `reply` is the JSON failure.
   */
  cameraSnapshot: { request: z.strictObject({ width: z.number().int().min(SNAPSHOT_WIDTH.min).max(SNAPSHOT_WIDTH.max).optional() }), reply: ErrorReplySchema },
  nodesList: { request: Empty, reply: reply({ nodes: z.array(NodeInfoSchema) }) },
  nodeDrain: { request: Empty, reply: reply({ released: z.number().int().nonnegative() }) },
} as const;

export type ControlName = keyof typeof control;
export type ControlRequest<N extends ControlName> = z.output<(typeof control)[N]["request"]>;
export type ControlReply<N extends ControlName> = z.output<(typeof control)[N]["reply"]>;

// ---------------------------------------------------------------- HTTP bodies

export const http = {
  /** The body of a route that takes none (stop, drain): absent or `{}`; anything else is 400, and nothing changes. */
  noBody: z.strictObject({}).optional(),
  /** GET /cameras: without `limit` or `after` every camera (the worker's shape); with them one page and its `next`. */
  camerasListQuery: z.strictObject({
    tenant: IdSchema.optional(),
    site: IdSchema.optional(),
    limit: z.coerce.number().int().min(1).max(CAMERAS_LIST_MAX_LIMIT).optional(),
    after: IdSchema.optional(),
  }),
  /** POST /cameras/{id}/start, the single-worker shape. */
  legacyStartRequest: z.object({ stream_url: SourceUrl, solutions: z.array(SolutionName).max(32).default([]) }),
  legacyStartResponse: z.object({
    camera_id: IdSchema,
    status: z.literal("started"),
    stream_url: z.string(),
    message: z.string(),
  }),
  webrtcUrls: z.object({
    camera_id: IdSchema,
    webrtc: z.string(),
    hls: z.string().nullable(),
    rtsp: z.string().nullable(),
  }),
  offer: z.strictObject({ sdp: z.string().min(1).max(64 * 1024), type: z.literal("offer") }),
  answer: z.object({ sdp: z.string(), type: z.literal("answer") }),
  error: z.object({ error: ErrorBodySchema }),
  /** GET /cameras/{id}/snapshot.jpg */
  snapshotQuery: z.strictObject({ width: WidthQuery.optional(), token: ApiTokenQuery }),
  /** GET /cameras/{id}/stream/feed */
  feedQuery: z.strictObject({
    width: WidthQuery.optional(),
    token: ApiTokenQuery,
    fps: z
      .string()
      .regex(/^\d{1,2}(\.\d{1,3})?$/, "must be a number of frames per second")
      .transform(Number)
      .pipe(z.number().min(FEED_FPS.min).max(FEED_FPS.max))
      .optional(),
  }),
} as const;

// ---------------------------------------------------------------- parsing

/** Formats zod issues as `field: message; …`, so the message names the field. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "(body)";
      return `${path}: ${issue.message}`;
    })
    .join("; ");
}

/** Parses input or throws INVALID_ARGUMENT naming every bad field. */
export function parseOrThrow<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  // Values may carry credentials (a URL): the message names fields, never echoes input.
  throw new CamfleetError("INVALID_ARGUMENT", `invalid ${what}: ${redact(describeIssues(result.error))}`, { cause: result.error });
}
