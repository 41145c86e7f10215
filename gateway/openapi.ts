import { z } from "zod";
import {
  CameraSpecPatchSchema,
  CameraSpecSchema,
  CameraStatusSchema,
  CONTROL_ERROR_CODES,
  CONTROL_ERROR_CODE_NAMES,
  DetectionEventSchema,
  http,
  IdSchema,
  StatusEventSchema,
  type ControlErrorCode,
} from "../subjects/index.ts";
import { FeedQuerySchema, FleetHistoryQuerySchema, HistoryQuerySchema } from "./routes/events.ts";
import { StatusHistoryQuerySchema } from "./routes/ui.ts";

/**
 * GET /openapi.json: the gateway's HTTP API as an OpenAPI 3.1 document, its
 * bodies and queries generated from the same zod schemas the routes validate
 * with (zod 4's JSON Schema export), and every error code of the registry
 * (subjects/errors.ts). The route list below is checked against the routes
 * the gateway really registers (test/openapi.test.ts), so neither can drift.
 */

type Method = "get" | "post" | "put" | "patch" | "delete";

interface RouteDoc {
  summary: string;
  tags: string[];
  query?: z.ZodObject;
  /** JSON body schema, or a media type with a description for non-JSON bodies. */
  body?: z.ZodType | { type: string; description: string };
  /** Success status → JSON schema, or a media type for non-JSON answers. */
  ok: Record<number, z.ZodType | { type: string; description: string } | null>;
  /** Error codes this route answers with (beyond UNAUTHENTICATED, which every authenticated route may). */
  errors: ControlErrorCode[];
  /** No bearer token needed. */
  open?: boolean;
}

const Info = z.object({
  name: z.literal("camfleet"),
  version: z.string(),
  gateway: IdSchema,
  url: z.string(),
  nodes: z.number().int(),
  cameras: z.number().int().nullable(),
  capabilities: z.object({ solutions: z.array(z.string()).nullable(), webrtc: z.boolean(), hls: z.boolean(), rtsp: z.boolean() }),
});
const Health = z.object({ status: z.string(), reason: z.string().optional() });
const LegacyCamera = z.object({
  camera_id: IdSchema,
  name: z.string().nullable(),
  stream_url: z.string(),
  solutions: z.array(z.string()),
  enabled: z.boolean(),
  active: z.boolean(),
  state: z.string(),
  node: z.string().nullable(),
  tenant: z.string(),
  site: z.string(),
});
const LegacyStatus = z.object({
  camera_id: IdSchema,
  active: z.boolean(),
  stream_info: z.object({ fps: z.number(), width: z.number(), height: z.number(), connected: z.boolean() }),
  processing_info: z.object({ frames_processed: z.number(), frames_sent_ai: z.number(), avg_process_time: z.string() }),
  webrtc_info: z.object({ session_id: z.string().nullable(), active: z.boolean(), uptime: z.string() }),
  state: z.string(),
  node: z.string().nullable(),
  epoch: z.number().nullable(),
  error: CameraStatusSchema.shape.error.nullable(),
  viewers: z.number(),
});
const HistoryPage = z.object({ camera: IdSchema.optional(), order: z.enum(["newest", "oldest"]), detections: z.array(DetectionEventSchema), next: z.string().nullable() });
const sdp = (description: string) => ({ type: "application/sdp", description });

const ROUTES: Record<string, Partial<Record<Method, RouteDoc>>> = {
  "/health": { get: { summary: "Liveness, the single worker's shape", tags: ["operations"], ok: { 200: Health }, errors: [], open: true } },
  "/healthz": { get: { summary: "Liveness", tags: ["operations"], ok: { 200: Health }, errors: [], open: true } },
  "/readyz": { get: { summary: "Readiness: NATS connected and JetStream answering", tags: ["operations"], ok: { 200: Health, 503: Health }, errors: [], open: true } },
  "/metrics": { get: { summary: "Prometheus metrics", tags: ["operations"], ok: { 200: { type: "text/plain", description: "Prometheus text format" } }, errors: [] } },
  "/openapi.json": { get: { summary: "This document", tags: ["operations"], ok: { 200: { type: "application/json", description: "OpenAPI 3.1" } }, errors: [] } },
  "/nodes/{node}/drain": { post: { summary: "Make a node hand every camera over and claim no more", tags: ["operations"], ok: { 200: z.object({ node: IdSchema, draining: z.literal(true), released: z.number().int() }) }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"] } },
  "/": { get: { summary: "Worker information and capabilities (a browser's `Accept: text/html` gets the dashboard instead)", tags: ["legacy"], ok: { 200: Info }, errors: [] } },
  "/ui/*": { get: { summary: "The dashboard: its page (/ui/) and static files", tags: ["dashboard"], ok: { 200: { type: "text/html", description: "the page, its script and style sheet" } }, errors: ["NOT_FOUND"], open: true } },
  "/ui/vendor/{file}": { get: { summary: "The dashboard's ES modules (Preact, htm, eventsource-parser), served from the gateway's own packages", tags: ["dashboard"], ok: { 200: { type: "text/javascript", description: "an ES module" } }, errors: ["NOT_FOUND"], open: true } },
  "/cameras/{id}/status/history": { get: { summary: "A camera's state changes (status edge events) since `since` (default 1h), oldest first", tags: ["events"], query: StatusHistoryQuerySchema, ok: { 200: z.object({ camera: IdSchema, since_ts: z.number().int(), events: z.array(StatusEventSchema), truncated: z.boolean() }) }, errors: ["INVALID_ARGUMENT", "UNAVAILABLE"] } },
  "/cameras": {
    get: { summary: "Every camera with its state (or one page)", tags: ["legacy"], query: http.camerasListQuery, ok: { 200: z.object({ cameras: z.array(LegacyCamera), total: z.number().int(), next: z.string().optional() }) }, errors: ["INVALID_ARGUMENT", "UNAVAILABLE"] },
    post: { summary: "Create a camera", tags: ["config"], body: CameraSpecSchema, ok: { 201: CameraSpecSchema }, errors: ["INVALID_ARGUMENT", "CONFLICT", "PAYLOAD_TOO_LARGE", "UNAVAILABLE"] },
  },
  "/cameras/{id}": {
    get: { summary: "A camera's spec; ETag is its revision", tags: ["config"], ok: { 200: CameraSpecSchema }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"] },
    put: { summary: "Create or replace a camera; If-Match makes it a compare-and-set", tags: ["config"], body: CameraSpecSchema.partial({ id: true }), ok: { 200: CameraSpecSchema }, errors: ["INVALID_ARGUMENT", "PRECONDITION_FAILED", "CONFLICT", "PAYLOAD_TOO_LARGE", "UNAVAILABLE"] },
    patch: { summary: "Change some fields of a camera", tags: ["config"], body: CameraSpecPatchSchema, ok: { 200: CameraSpecSchema }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "PRECONDITION_FAILED", "CONFLICT", "PAYLOAD_TOO_LARGE", "UNAVAILABLE"] },
    delete: { summary: "Delete a camera", tags: ["config"], ok: { 204: null }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "PRECONDITION_FAILED", "UNAVAILABLE"] },
  },
  "/cameras/{id}/start": { post: { summary: "Start (and create) a camera, the single worker's shape", tags: ["legacy"], body: http.legacyStartRequest, ok: { 200: http.legacyStartResponse }, errors: ["INVALID_ARGUMENT", "CONFLICT", "UNAVAILABLE"] } },
  "/cameras/{id}/stop": { post: { summary: "Stop a camera", tags: ["legacy"], ok: { 200: z.object({ camera_id: IdSchema, status: z.literal("stopped"), message: z.string() }) }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"] } },
  "/cameras/{id}/status": { get: { summary: "A camera's status, the single worker's shape plus camfleet's", tags: ["legacy"], ok: { 200: LegacyStatus }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"] } },
  "/system/stats": { get: { summary: "Per node and cluster totals", tags: ["legacy"], ok: { 200: { type: "application/json", description: "{nodes: [...], cluster: {...}, gateway: {...}}" } }, errors: ["UNAVAILABLE"] } },
  "/cameras/{id}/detections": { get: { summary: "A camera's detection history", tags: ["events"], query: HistoryQuerySchema, ok: { 200: HistoryPage }, errors: ["INVALID_ARGUMENT", "UNAVAILABLE"] } },
  "/detections": { get: { summary: "Detection history across cameras, by camera, tenant, site and label", tags: ["events"], query: FleetHistoryQuerySchema, ok: { 200: HistoryPage }, errors: ["INVALID_ARGUMENT", "UNAVAILABLE"] } },
  "/events": { get: { summary: "Live status and detection events (Server-Sent Events); resume with Last-Event-ID", tags: ["events"], query: FeedQuerySchema, ok: { 200: { type: "text/event-stream", description: `events "status" (${"StatusEvent"}) and "detection" (DetectionEvent), each with an id` } }, errors: ["INVALID_ARGUMENT", "UNAVAILABLE"] } },
  "/ws": { get: { summary: "The same events over a WebSocket", tags: ["events"], query: FeedQuerySchema, ok: { 101: null }, errors: ["INVALID_ARGUMENT", "UNAVAILABLE"] } },
  "/whip/{id}": { post: { summary: "WHIP: publish a camera to the built-in relay", tags: ["media"], body: sdp("SDP offer"), ok: { 201: sdp("SDP answer; Location names the session"), 307: null }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNSUPPORTED_MEDIA", "PAYLOAD_TOO_LARGE", "CAPACITY", "UNAVAILABLE"] } },
  "/whep/{id}": { post: { summary: "WHEP: watch a camera", tags: ["media"], body: sdp("SDP offer"), ok: { 201: sdp("SDP answer; Location names the session"), 307: null }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "CONFLICT", "UNSUPPORTED_MEDIA", "PAYLOAD_TOO_LARGE", "CAPACITY", "UNAVAILABLE"] } },
  "/whip/{id}/{session}": {
    delete: { summary: "End a WHIP session", tags: ["media"], ok: { 200: null }, errors: ["NOT_FOUND"] },
    patch: { summary: "Trickle ICE: not supported (always 405, code INVALID_ARGUMENT, Allow: DELETE)", tags: ["media"], ok: { 405: null }, errors: [] },
  },
  "/whep/{id}/{session}": {
    delete: { summary: "End a WHEP session", tags: ["media"], ok: { 200: null }, errors: ["NOT_FOUND"] },
    patch: { summary: "Trickle ICE: not supported (always 405, code INVALID_ARGUMENT, Allow: DELETE)", tags: ["media"], ok: { 405: null }, errors: [] },
  },
  "/cameras/{id}/webrtc/offer": { post: { summary: "Watch a camera with a JSON offer (the single worker's route)", tags: ["media"], body: http.offer, ok: { 200: http.answer.extend({ location: z.string() }), 307: null }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "CONFLICT", "UNSUPPORTED_MEDIA", "CAPACITY", "UNAVAILABLE"] } },
  "/webrtc/{id}/urls": { get: { summary: "A camera's WHEP URL, and MediaMTX HLS/RTSP URLs when configured", tags: ["media"], ok: { 200: http.webrtcUrls }, errors: ["INVALID_ARGUMENT", "NOT_FOUND"] } },
  "/cameras/{id}/snapshot.jpg": { get: { summary: "The camera's latest frame as a JPEG, from its owner node", tags: ["pictures"], query: http.snapshotQuery, ok: { 200: { type: "image/jpeg", description: "the latest frame" } }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNSUPPORTED_MEDIA", "PAYLOAD_TOO_LARGE", "UNAVAILABLE"] } },
  "/cameras/{id}/stream/feed": { get: { summary: "MJPEG of the camera at a low rate (one loop per camera and width in the gateway)", tags: ["pictures"], query: http.feedQuery, ok: { 200: { type: "multipart/x-mixed-replace", description: "JPEG parts, boundary camfleet-frame" } }, errors: ["INVALID_ARGUMENT", "NOT_FOUND", "UNSUPPORTED_MEDIA", "PAYLOAD_TOO_LARGE", "UNAVAILABLE"] } },
  "/webrtc/stats": { get: { summary: "The relay's sessions and counters", tags: ["media"], query: z.strictObject({ id: IdSchema.optional() }), ok: { 200: { type: "application/json", description: "{cameras: [...]}" } }, errors: ["INVALID_ARGUMENT"] } },
};

/** The routes documented here, as `METHOD /path/{param}`. */
export function documentedRoutes(): string[] {
  return Object.entries(ROUTES).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`));
}

const jsonSchema = (schema: z.ZodType, io: "input" | "output") => z.toJSONSchema(schema, { io, unrepresentable: "any", target: "draft-2020-12" });

/** The OpenAPI document for a gateway at `serverUrl`. */
export function openApiDocument(options: { version: string; serverUrl: string; authRequired: boolean }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [path, methods] of Object.entries(ROUTES)) {
    const params = [...path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: "path", required: true, schema: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" } }));
    paths[path] = {};
    for (const [method, doc] of Object.entries(methods) as Array<[Method, RouteDoc]>) {
      const query = doc.query === undefined ? [] : Object.entries(doc.query.shape).map(([name, schema]) => ({ name, in: "query", required: false, schema: jsonSchema(schema as z.ZodType, "input") }));
      const responses: Record<string, unknown> = {};
      for (const [status, body] of Object.entries(doc.ok)) responses[status] = { description: statusText(Number(status)), ...(body === null ? {} : { content: content(body, "output") }) };
      const errorCodes = doc.open === true || !options.authRequired ? doc.errors : [...doc.errors, "UNAUTHENTICATED" as const];
      for (const code of errorCodes) {
        const status = String(CONTROL_ERROR_CODES[code].http);
        const existing = responses[status] as { description: string; "x-error-codes": string[] } | undefined;
        responses[status] = existing !== undefined
          ? { ...existing, "x-error-codes": [...existing["x-error-codes"], code] }
          : { description: CONTROL_ERROR_CODES[code].doc, content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } }, "x-error-codes": [code] };
      }
      paths[path][method] = {
        summary: doc.summary,
        tags: doc.tags,
        ...(params.length + query.length > 0 ? { parameters: [...params, ...query] } : {}),
        ...(doc.body !== undefined ? { requestBody: { required: true, content: content(doc.body, "input") } } : {}),
        responses,
        ...(doc.open === true ? { security: [] } : {}),
      };
    }
  }
  return {
    openapi: "3.1.0",
    info: { title: "camfleet gateway", version: options.version, description: "The HTTP gateway of a camfleet cluster: legacy REST, camera config, live events, detection history, WHIP/WHEP relay, operations." },
    servers: [{ url: options.serverUrl }],
    ...(options.authRequired ? { security: [{ bearer: [] }] } : {}),
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "CAMFLEET_API_TOKEN" } },
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: {
                code: { type: "string", enum: CONTROL_ERROR_CODE_NAMES, description: CONTROL_ERROR_CODE_NAMES.map((c) => `${c} (${CONTROL_ERROR_CODES[c].http}): ${CONTROL_ERROR_CODES[c].doc}`).join("\n") },
                message: { type: "string" },
              },
            },
          },
        },
        CameraSpec: jsonSchema(CameraSpecSchema, "output"),
        CameraStatus: jsonSchema(CameraStatusSchema, "output"),
        StatusEvent: jsonSchema(StatusEventSchema, "output"),
        DetectionEvent: jsonSchema(DetectionEventSchema, "output"),
      },
    },
  };
}

function content(body: z.ZodType | { type: string; description: string }, io: "input" | "output"): Record<string, unknown> {
  if (body instanceof z.ZodType) return { "application/json": { schema: jsonSchema(body, io) } };
  return { [body.type]: { schema: { type: "string", description: body.description } } };
}

function statusText(status: number): string {
  return ({ 101: "Switching Protocols (WebSocket)", 200: "OK", 201: "Created", 204: "No Content", 307: "Temporary Redirect to the gateway that holds the camera's relay", 405: "Method Not Allowed", 503: "Not ready" } as Record<number, string>)[status] ?? String(status);
}
