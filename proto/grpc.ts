import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { HealthImplementation } from "grpc-health-check";
import {
  boxProblem,
  checkFrame,
  clampBox,
  DetectorError,
  type DetectBox,
  type DetectedObject,
  type DetectorErrorCode,
  type DetectorService,
  type DetectOptions,
  type DetectRequest,
  type DetectResult,
  type FrameFormat,
  type SolutionList,
} from "./contract.ts";

/**
 * The gRPC side of the detector contract: detection.proto is loaded at run
 * time with @grpc/proto-loader, and its messages never leave this file.
 * `serveDetector` puts a DetectorService behind the proto (plus the standard
 * grpc.health.v1 service); `DetectorClient` calls any server of the proto and
 * hands back checked domain values.
 */

export const PROTO_PATH = fileURLToPath(new URL("./detection.proto", import.meta.url));
/** Fully qualified service name, as the health service and reflection know it. */
export const DETECTOR_SERVICE_NAME = "camfleet.detection.v1.Detector";

const WIRE_FORMAT: Record<FrameFormat, string> = { gray: "PIXEL_FORMAT_GRAY8", rgb24: "PIXEL_FORMAT_RGB24", jpeg: "PIXEL_FORMAT_JPEG" };
const DOMAIN_FORMAT = new Map<string, FrameFormat>(Object.entries(WIRE_FORMAT).map(([k, v]) => [v, k as FrameFormat]));
/** A frame is at most this big on the wire (a 4K RGB frame is ~25 MB). */
const MAX_MESSAGE_BYTES = 64 << 20;

// ---------------------------------------------------------------- wire shapes (private)

interface WireFrame {
  data?: Buffer;
  width?: number;
  height?: number;
  format?: string;
}
interface WireDetectRequest {
  frame?: WireFrame | null;
  camera_id?: string;
  frame_id?: number | string;
  capture_ts_ms?: number | string;
  solutions?: string[];
  options?: WireDetectOptions | null;
}
interface WireDetectOptions {
  /** Unset optional fields arrive as null (proto3 `optional`, oneofs: true). */
  min_score?: number | null;
  labels?: string[];
  nms_iou?: number | null;
}
interface WireDetection {
  label?: string;
  score?: number;
  box?: { x?: number; y?: number; w?: number; h?: number } | null;
  solution?: string;
}
interface WireDetectResponse {
  detections?: WireDetection[];
  model?: string;
  inference_ms?: number;
  motion_score?: number | null;
}

let loaded: grpc.ServiceDefinition | undefined;
/** The Detector service definition, loaded once. */
function detectorDefinition(): grpc.ServiceDefinition {
  if (loaded !== undefined) return loaded;
  const pkgDef = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(pkgDef) as unknown as {
    camfleet: { detection: { v1: { Detector: grpc.ServiceClientConstructor } } };
  };
  loaded = pkg.camfleet.detection.v1.Detector.service;
  return loaded;
}

// ---------------------------------------------------------------- server

export interface DetectorServerOptions {
  /** host:port; port 0 picks a free one. Bind to 127.0.0.1 unless others must reach it. */
  listen: string;
  /** Called for every request that ended in an error that is not the caller's fault. */
  onError?: (err: unknown, request: { cameraId?: string; frameId?: number }) => void;
  /** Serve TLS instead of cleartext (DETECTOR_TLS_CERT/KEY/CA). PEM contents, already read: this folder reads no files of the config. */
  tls?: DetectorServerTls;
}

/** The detector's TLS: its certificate and key, and optionally the CA client certificates must be signed by. */
export interface DetectorServerTls {
  /** PEM certificate chain of the detector, leaf first. */
  cert: Buffer;
  /** PEM private key of `cert`. */
  key: Buffer;
  /** PEM CA bundle: set = every client must present a certificate signed by it (mutual TLS). */
  ca?: Buffer;
}

export interface DetectorServer {
  /** host:port actually bound. */
  readonly address: string;
  readonly port: number;
  /** Marks the service NOT_SERVING in the health service (e.g. while draining). */
  setServing(serving: boolean): void;
  /** Stops accepting calls, waits up to `graceMs` for running ones, then cuts the rest. */
  stop(graceMs?: number): Promise<void>;
}

/** Serves `impl` as camfleet.detection.v1.Detector, with grpc.health.v1.Health next to it. */
export async function serveDetector(impl: DetectorService, options: DetectorServerOptions): Promise<DetectorServer> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_MESSAGE_BYTES });
  const health = new HealthImplementation({ "": "SERVING", [DETECTOR_SERVICE_NAME]: "SERVING" });
  health.addToServer(server);

  server.addService(detectorDefinition(), {
    Detect: (call: grpc.ServerUnaryCall<WireDetectRequest, WireDetectResponse>, callback: grpc.sendUnaryData<WireDetectResponse>) => {
      let request: DetectRequest;
      try {
        request = requestFromWire(call.request);
      } catch (err) {
        callback(toServiceError(err));
        return;
      }
      Promise.resolve()
        .then(() => impl.detect(request))
        .then(
          (result) => callback(null, resultToWire(result)),
          (err: unknown) => {
            if (!(err instanceof DetectorError && err.code === "INVALID_ARGUMENT")) options.onError?.(err, request);
            callback(toServiceError(err));
          },
        );
    },
    ListSolutions: (_call: grpc.ServerUnaryCall<unknown, SolutionList>, callback: grpc.sendUnaryData<{ solutions: string[]; model: string }>) => {
      Promise.resolve()
        .then(() => impl.listSolutions())
        .then(
          (list) => callback(null, { solutions: list.solutions, model: list.model }),
          (err: unknown) => {
            options.onError?.(err, {});
            callback(toServiceError(err));
          },
        );
    },
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.listen, serverCredentials(options.tls), (err, p) => (err ? reject(err) : resolve(p)));
  });
  const host = options.listen.slice(0, options.listen.lastIndexOf(":"));
  let stopping: Promise<void> | undefined;
  return {
    address: `${host}:${port}`,
    port,
    setServing: (serving) => {
      const status = serving ? "SERVING" : "NOT_SERVING";
      health.setStatus("", status);
      health.setStatus(DETECTOR_SERVICE_NAME, status);
    },
    stop: (graceMs = 1000) =>
      (stopping ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      })),
  };
}

/** grpc-js's own TLS: with a CA, client certificates are requested and checked against it (checkClientCertificate). */
function serverCredentials(tls: DetectorServerTls | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.ca ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.ca !== undefined);
}

function requestFromWire(wire: WireDetectRequest): DetectRequest {
  const frame = wire.frame;
  if (frame === undefined || frame === null) throw new DetectorError("INVALID_ARGUMENT", "frame is missing");
  const format = DOMAIN_FORMAT.get(frame.format ?? "");
  if (format === undefined) {
    throw new DetectorError("INVALID_ARGUMENT", `frame.format ${JSON.stringify(frame.format ?? "")} is not one of ${Object.values(WIRE_FORMAT).join(", ")}`);
  }
  const solutions = wire.solutions ?? [];
  if (solutions.length === 0) throw new DetectorError("INVALID_ARGUMENT", "solutions is empty: name at least one analysis, e.g. motion");
  const cameraId = wire.camera_id ?? "";
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(cameraId)) {
    throw new DetectorError("INVALID_ARGUMENT", "camera_id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'");
  }
  const request: DetectRequest = {
    frame: { data: frame.data ?? Buffer.alloc(0), width: frame.width ?? 0, height: frame.height ?? 0, format },
    cameraId,
    frameId: Number(wire.frame_id ?? 0),
    captureTs: Number(wire.capture_ts_ms ?? 0),
    solutions,
  };
  const options = optionsFromWire(wire.options);
  if (options !== undefined) request.options = options;
  checkFrame(request.frame);
  return request;
}

/** A camera's tuning, checked: out of range is INVALID_ARGUMENT, as a bad frame is. */
function optionsFromWire(wire: WireDetectOptions | null | undefined): DetectOptions | undefined {
  if (wire === undefined || wire === null) return undefined;
  const options: DetectOptions = {};
  for (const [field, key] of [["min_score", "minScore"], ["nms_iou", "nmsIou"]] as const) {
    const v = wire[field];
    if (v === undefined || v === null) continue;
    if (!unit(v)) throw new DetectorError("INVALID_ARGUMENT", `options.${field} must be in 0..1, got ${v}`);
    // float on the wire: 0.3 arrives as 0.30000001192…
    options[key] = r4(v);
  }
  if (wire.labels !== undefined && wire.labels.length > 0) options.labels = [...wire.labels];
  return Object.keys(options).length > 0 ? options : undefined;
}

function resultToWire(result: DetectResult): WireDetectResponse {
  return {
    detections: result.detections.map((d) => ({ label: d.label, score: d.score, box: d.box, solution: d.solution ?? "" })),
    model: result.model,
    inference_ms: result.inferenceMs ?? 0,
    ...(result.motionScore !== undefined ? { motion_score: result.motionScore } : {}),
  };
}

const GRPC_STATUS: Record<DetectorErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED,
  BAD_RESPONSE: grpc.status.INTERNAL,
  FAILED: grpc.status.INTERNAL,
};

function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof DetectorError) return { code: GRPC_STATUS[err.code], details: err.message };
  // An implementation's bug: say it failed, keep the details out of the reply.
  return { code: grpc.status.INTERNAL, details: "the detector failed on this frame" };
}

// ---------------------------------------------------------------- client

export interface DetectorClientOptions {
  /** host:port of the detector (AI_ENDPOINT). */
  endpoint: string;
  /** Longest wait between reconnect attempts, ms. Default 2000 (grpc-js's own default is 120 s). */
  maxReconnectBackoffMs?: number;
  /** Connect with TLS instead of cleartext (AI_TLS_CA/CERT/KEY). PEM contents, already read. */
  tls?: DetectorClientTls;
}

/** TLS towards the detector: the CA its certificate must chain to, and optionally a client certificate. */
export interface DetectorClientTls {
  /** PEM CA bundle the detector's certificate must chain to; its name must match the endpoint's host. */
  ca: Buffer;
  /** PEM client certificate chain (with `key`), for a detector that requires one. */
  cert?: Buffer;
  /** PEM private key of `cert`. */
  key?: Buffer;
}

/**
 * A client of any camfleet.detection.v1 server. The channel reconnects by
 * itself with backoff; a call while the detector is away fails at once with
 * UNAVAILABLE instead of queueing. Every result is checked, so a detector
 * answering nonsense is a BAD_RESPONSE here, never a bad event downstream.
 */
export class DetectorClient {
  readonly endpoint: string;
  readonly #client: grpc.Client;
  #closed = false;

  constructor(options: DetectorClientOptions) {
    this.endpoint = options.endpoint;
    const Ctor = grpc.makeGenericClientConstructor(withGarbleMarker(detectorDefinition()), "Detector");
    const tls = options.tls;
    const credentials = tls === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null);
    this.#client = new Ctor(options.endpoint, credentials, {
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": options.maxReconnectBackoffMs ?? 2000,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_receive_message_length": 4 << 20,
      // Own channel per client: closing one never cuts another camera's calls.
      "grpc.use_local_subchannel_pool": 1,
    });
  }

  /** Calls Detect with a deadline; `signal` cancels the call. */
  detect(request: DetectRequest, options: { deadlineMs: number; signal?: AbortSignal }): Promise<DetectResult> {
    const wire: WireDetectRequest = {
      frame: { data: request.frame.data, width: request.frame.width, height: request.frame.height, format: WIRE_FORMAT[request.frame.format] },
      camera_id: request.cameraId,
      frame_id: request.frameId,
      capture_ts_ms: request.captureTs,
      solutions: request.solutions,
      ...(request.options !== undefined
        ? {
            options: {
              ...(request.options.minScore !== undefined ? { min_score: request.options.minScore } : {}),
              labels: request.options.labels ?? [],
              ...(request.options.nmsIou !== undefined ? { nms_iou: request.options.nmsIou } : {}),
            },
          }
        : {}),
    };
    return this.#unary<WireDetectResponse>("Detect", wire, options).then(resultFromWire);
  }

  listSolutions(options: { deadlineMs: number; signal?: AbortSignal }): Promise<SolutionList> {
    return this.#unary<{ solutions?: string[]; model?: string }>("ListSolutions", {}, options).then((r) => {
      if (!Array.isArray(r.solutions) || r.solutions.some((s) => typeof s !== "string")) throw new DetectorError("BAD_RESPONSE", "ListSolutions returned no list of names");
      return { solutions: r.solutions, model: typeof r.model === "string" ? r.model : "" };
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }

  #unary<R>(method: "Detect" | "ListSolutions", request: unknown, options: { deadlineMs: number; signal?: AbortSignal }): Promise<R> {
    if (this.#closed) return Promise.reject(new DetectorError("UNAVAILABLE", "the detector client is closed"));
    return new Promise<R>((resolve, reject) => {
      const deadline = Date.now() + options.deadlineMs;
      const fn = (this.#client as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>)[method]!.bind(this.#client);
      const call = fn(request, new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, response: R) => {
        options.signal?.removeEventListener("abort", cancel);
        if (err) reject(fromServiceError(err, this.endpoint, options.deadlineMs));
        else if (isGarbled(response)) reject(new DetectorError("BAD_RESPONSE", `detector at ${this.endpoint} answered bytes that are not a ${method} response`, { cause: response[GARBLED] }));
        else resolve(response);
      });
      const cancel = () => call.cancel();
      options.signal?.addEventListener("abort", cancel, { once: true });
    });
  }
}

const GARBLED = Symbol("garbled");
type Garbled = { [GARBLED]: unknown };

function isGarbled(v: unknown): v is Garbled {
  return typeof v === "object" && v !== null && GARBLED in v;
}

/**
 * The service definition with response decoding that cannot throw: bytes
 * that are no message become a marked value, which the client turns into
 * BAD_RESPONSE (grpc-js would report a generic INTERNAL, told apart only by
 * its text).
 */
function withGarbleMarker(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(def)) {
    out[name] = {
      ...m,
      responseDeserialize: (bytes: Buffer) => {
        try {
          return m.responseDeserialize(bytes);
        } catch (err) {
          return { [GARBLED]: err } satisfies Garbled;
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

function fromServiceError(err: grpc.ServiceError, endpoint: string, deadlineMs: number): DetectorError {
  switch (err.code) {
    case grpc.status.INVALID_ARGUMENT:
      return new DetectorError("INVALID_ARGUMENT", `detector refused the frame: ${err.details}`, { cause: err });
    case grpc.status.UNAVAILABLE:
      return new DetectorError("UNAVAILABLE", `detector at ${endpoint} is unavailable: ${err.details}`, { cause: err });
    case grpc.status.DEADLINE_EXCEEDED:
      return new DetectorError("DEADLINE_EXCEEDED", `detector at ${endpoint} did not answer within ${deadlineMs} ms`, { cause: err });
    case grpc.status.UNIMPLEMENTED:
      return new DetectorError("UNIMPLEMENTED", `detector at ${endpoint} does not implement this: ${err.details}`, { cause: err });
    case grpc.status.CANCELLED:
      return new DetectorError("FAILED", "detector call cancelled", { cause: err });
    default:
      return new DetectorError("FAILED", `detector at ${endpoint} failed: ${grpc.status[err.code] ?? err.code}: ${err.details}`, {
        cause: err,
      });
  }
}

const unit = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1;
/** float32 on the wire turns 0.313 into 0.31299999356…: four decimals are all a box or score means. */
const r4 = (v: number) => Math.round(v * 10_000) / 10_000;

/** Checks a Detect answer; anything out of contract is BAD_RESPONSE naming the field. */
function resultFromWire(wire: WireDetectResponse): DetectResult {
  const bad = (what: string) => new DetectorError("BAD_RESPONSE", `detector answered an invalid result: ${what}`);
  const detections: DetectedObject[] = [];
  for (const [i, d] of (wire.detections ?? []).entries()) {
    if (typeof d.label !== "string" || d.label === "" || d.label.length > 128) throw bad(`detections[${i}].label must be 1 to 128 characters`);
    if (!unit(d.score)) throw bad(`detections[${i}].score must be 0..1, got ${d.score}`);
    const b = d.box;
    if (b === undefined || b === null) throw bad(`detections[${i}].box is missing`);
    // The same rule the reference detector's boxes are built to (contract.ts).
    const problem = boxProblem(b);
    if (problem !== undefined) throw bad(`detections[${i}].${problem}`);
    const box = clampBox(b as DetectBox);
    detections.push({ label: d.label, score: r4(d.score), box, ...(d.solution ? { solution: d.solution } : {}) });
  }
  const motion = wire.motion_score;
  return {
    detections,
    model: typeof wire.model === "string" ? wire.model : "",
    ...(typeof wire.inference_ms === "number" && wire.inference_ms > 0 ? { inferenceMs: wire.inference_ms } : {}),
    ...(unit(motion) ? { motionScore: r4(motion) } : {}),
  };
}
