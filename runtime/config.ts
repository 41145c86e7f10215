import { readFileSync } from "node:fs";
import { homedir, hostname } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { redact } from "../subjects/index.ts";
import { readDetectorClientTls, readDetectorServerTls, type DetectorClientTlsConfig, type DetectorServerTlsConfig } from "./detector-tls.ts";
import { NatsAuthError, readNatsAuth, splitNatsUrls, type NatsAuth, type NatsAuthSettings } from "./nats-auth.ts";

/**
 * Configuration from environment variables (docs/contract.md, Configuration).
 * Every variable is validated; a bad value stops start-up with one line per
 * variable, naming it and what is allowed. The single-worker names are
 * accepted as aliases; when both are set, the camfleet name wins.
 */

/** Which command is starting: decides defaults that differ between them. */
export type Role = "node" | "gateway" | "up" | "detector" | "client";

export interface Config {
  /** NATS servers to connect to, credentials taken out (they are in natsAuth); undefined = start an embedded nats-server. */
  natsServers?: string[];
  /** NATS credentials and TLS (NATS_USER … NATS_KEY, credentials in NATS_URL), files read and checked. Holds secrets: log describeConfig() only. */
  natsAuth: NatsAuth;
  /** This node's id; default derived from the host name. */
  nodeId: string;
  /** Cameras this node runs at most. Default 32. */
  maxCameras: number;
  /** HTTP port: /metrics, /healthz, /readyz on a node (default 9108); the gateway (default 8080). 0 = any free port. */
  httpPort: number;
  /** Address HTTP servers bind to. Default 127.0.0.1; set 0.0.0.0 to serve other machines. */
  httpHost: string;
  /** WHIP endpoint template; `{camera}` stands for the camera id. */
  whipUrl: string;
  /** gRPC detector address, host:port. Default DETECTOR_LISTEN, else 127.0.0.1:50051 (so `camfleet up` uses its own detector). */
  aiEndpoint: string;
  /** TLS towards the detector (AI_TLS_CA, AI_TLS_CERT, AI_TLS_KEY), files read; unset = cleartext. Read for node, gateway and up. Holds a key: log describeConfig() only. */
  aiTls?: DetectorClientTlsConfig;
  /** Frames per second sent to the detector at most, for cameras that do not say. Default 1. */
  aiMaxFps: number;
  /** Analyse every n-th frame instead (single-worker AI_PROCESS_EVERY_N); unset = use the rate. */
  aiEveryN?: number;
  /** Deadline of one detector call, ms. Default 2000. */
  aiTimeoutMs: number;
  /** Lease time-to-live, ms. Default 3000: failover in about 3 s, fence margin 750 ms. */
  leaseTtlMs: number;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  /** LOG_FORMAT: json lines, readable lines (pino-pretty), or auto: readable when stdout is a terminal. Default auto. */
  logFormat: "auto" | "json" | "pretty";
  /** Allow `file:` and `testsrc:` sources. Default off; on for `camfleet up`. */
  allowLocalSources: boolean;
  /** Where `camfleet detector` listens, host:port. Default 127.0.0.1:50051. */
  detectorListen: string;
  /** The reference detector also serves person_detection and object_detection (a pretrained model in a worker thread). Default on; DETECTOR_OBJECTS=false leaves motion only. */
  detectorObjects: boolean;
  /** TLS the detector serves (DETECTOR_TLS_CERT, DETECTOR_TLS_KEY, DETECTOR_TLS_CA), files read; unset = cleartext. Read for detector and up. Holds a key: log describeConfig() only. */
  detectorTls?: DetectorServerTlsConfig;
  /** Bearer token the HTTP gateway requires; unset = no auth. Never logged. */
  apiToken?: string;
  /** Where the embedded nats-server keeps its JetStream store. */
  dataDir: string;
  /** Client port of the embedded nats-server. Default 4222; 0 = any free port. */
  embeddedNatsPort: number;
  /** Replicas of streams and buckets; unset = 1 on a single server, 3 on a cluster of three or more. */
  replicas?: number;
  /** Public base URL of this gateway, for WHEP/WHIP redirects and Location headers; default http://HTTP_HOST:HTTP_PORT. */
  gatewayUrl?: string;
  /**
   * CAMFLEET_CORS_ORIGINS: origins whose pages may call the gateway from a browser
   * (a WHEP player elsewhere). "*" (default) any origin, without cookies;
   * a list of origins; or "off" (no CORS headers at all).
   */
  corsOrigins: "*" | "off" | string[];
  /** Single-worker MEDIAMTX_HLS: base URL of an external MediaMTX's HLS server (no trailing slash); fills `hls` in GET /webrtc/{id}/urls. */
  mediamtxHls?: string;
  /** Single-worker MEDIAMTX_RTSP: base URL of an external MediaMTX's RTSP server (no trailing slash); fills `rtsp` in GET /webrtc/{id}/urls. */
  mediamtxRtsp?: string;
  /** An on-demand camera keeps publishing this long after its last viewer left, ms. Default 30000. */
  onDemandLingerMs: number;
  /** WHEP viewers of one camera a gateway serves at most. Default 100. */
  relayMaxViewersPerCamera: number;
  /** WHEP viewers a gateway serves at most, all cameras together. Default 500. */
  relayMaxViewers: number;
  /** The relay keeps WebRTC on 127.0.0.1 only (single-host setups, tests). Default false. */
  webrtcLoopbackOnly: boolean;
  /** Actor kind that runs each camera: `camera` (default) or `sim` (simulated, no media). */
  actorKind: string;
  /**
   * Limits of the CAMFLEET_DETECTIONS stream, each only when its variable is set: unset
   * max bytes are sized to the JetStream store, max age is 7 days, replicas are `replicas`.
   */
  detectionsStream: { maxAgeMs?: number; maxBytes?: number; replicas?: number };
  /** Max bytes of the CAMFLEET_STATUS stream when CAMFLEET_STATUS_MAX_BYTES is set; unset = sized to the store. */
  statusStream: { maxBytes?: number };
  /** Where streams and KV buckets keep their messages (CAMFLEET_STORAGE); unset = file. */
  storage?: "file" | "memory";
  /** Detection events a node buffers while NATS is away; more are dropped and counted. Default 10000. */
  detectionsBuffer: number;
}

const DEFAULT_HTTP_PORT: Record<Role, number> = { node: 9108, gateway: 8080, up: 8080, detector: 9108, client: 9108 };

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

const SECRET_VARS = new Set(["CAMFLEET_API_TOKEN", "NATS_PASSWORD", "NATS_TOKEN"]);

const int = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^-?\d+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().min(min, `must be a whole number from ${min} to ${max}`).max(max, `must be a whole number from ${min} to ${max}`));

const num = (min: number, max: number) =>
  z
    .string()
    .trim()
    .refine((s) => s !== "" && Number.isFinite(Number(s)), `must be a number greater than ${min} and at most ${max}`)
    .transform(Number)
    .pipe(z.number().gt(min, `must be a number greater than ${min} and at most ${max}`).max(max, `must be a number greater than ${min} and at most ${max}`));

const BOOL_WORDS: Record<string, boolean> = { true: true, "1": true, yes: true, on: true, false: false, "0": false, no: false, off: false };
const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((s) => s in BOOL_WORDS, "must be one of true, false, 1, 0, yes, no, on, off")
  .transform((s) => BOOL_WORDS[s] as boolean);

const hostPort = z
  .string()
  .trim()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:50051")
  .refine((s) => Number(s.slice(s.lastIndexOf(":") + 1)) <= 65535, "must have a port from 0 to 65535");

const natsServers = z
  .string()
  .trim()
  .min(1, "must not be empty")
  .transform((s) => s.split(",").map((u) => u.trim()).filter((u) => u !== ""))
  .refine(
    (list) => list.length > 0 && list.every((u) => /^[A-Za-z0-9.-]+:\d{1,5}$/.test(u) || isServerUrl(u)),
    "must be a comma-separated list of nats://host:port URLs",
  );

function isServerUrl(u: string): boolean {
  return /^(nats|tls|ws|wss):\/\//.test(u) && URL.canParse(u) && new URL(u).hostname !== "";
}

const httpUrl = z
  .string()
  .trim()
  .refine((s) => URL.canParse(s.replaceAll("{camera}", "x")) && /^https?:/.test(s), "must be an http:// or https:// URL");

const rtspUrl = z
  .string()
  .trim()
  .refine((s) => URL.canParse(s) && /^rtsps?:\/\//.test(s) && new URL(s).hostname !== "", "must be an rtsp:// or rtsps:// URL, e.g. rtsp://127.0.0.1:8554");

const corsOrigins = z
  .string()
  .trim()
  .transform((s): "*" | "off" | string[] => (s === "*" || s.toLowerCase() === "off" ? (s === "*" ? "*" : "off") : s.split(",").map((o) => o.trim()).filter((o) => o !== "")))
  .refine(
    (v) => typeof v === "string" || (v.length > 0 && v.every((o) => URL.canParse(o) && /^https?:$/.test(new URL(o).protocol) && new URL(o).origin === o.replace(/\/+$/, ""))),
    'must be "*", "off" or a comma-separated list of origins such as https://ops.example.com',
  );

const id = z.string().trim().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'");

/** Variable name → (schema, alias). Parsed one by one so each error names its variable. */
const VARS = {
  NATS_URL: { schema: natsServers },
  // The NATS tools' own names (nats CLI, nats.go): read as they read them.
  NATS_USER: { schema: z.string().min(1, "must not be empty") },
  NATS_PASSWORD: { schema: z.string().min(1, "must not be empty") },
  NATS_TOKEN: { schema: z.string().min(1, "must not be empty") },
  NATS_NKEY: { schema: z.string().trim().min(1, "must be the path of an NKey seed file") },
  NATS_CREDS: { schema: z.string().trim().min(1, "must be the path of a .creds file") },
  NATS_CA: { schema: z.string().trim().min(1, "must be the path of a PEM CA file") },
  NATS_CERT: { schema: z.string().trim().min(1, "must be the path of a PEM certificate file") },
  NATS_KEY: { schema: z.string().trim().min(1, "must be the path of a PEM private key file") },
  NODE_ID: { schema: id, alias: "WORKER_ID" },
  MAX_CAMERAS: { schema: int(1, 10_000) },
  HTTP_PORT: { schema: int(0, 65_535), alias: "WORKER_PORT" },
  HTTP_HOST: { schema: z.string().trim().min(1, "must not be empty") },
  WHIP_URL: { schema: httpUrl },
  MEDIAMTX_WHIP: { schema: httpUrl },
  MEDIAMTX_HLS: { schema: httpUrl },
  MEDIAMTX_RTSP: { schema: rtspUrl },
  AI_ENDPOINT: { schema: hostPort },
  AI_TLS_CA: { schema: z.string().trim().min(1, "must be the path of a PEM CA file") },
  AI_TLS_CERT: { schema: z.string().trim().min(1, "must be the path of a PEM certificate file") },
  AI_TLS_KEY: { schema: z.string().trim().min(1, "must be the path of a PEM private key file") },
  AI_MAX_FPS: { schema: num(0, 60) },
  AI_PROCESS_EVERY_N: { schema: int(1, 10_000) },
  AI_TIMEOUT_MS: { schema: int(10, 60_000) },
  LEASE_TTL_MS: { schema: int(1_000, 600_000) },
  LOG_LEVEL: { schema: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"], "must be one of fatal, error, warn, info, debug, trace, silent") },
  LOG_FORMAT: { schema: z.enum(["auto", "json", "pretty"], "must be one of auto, json, pretty") },
  ALLOW_LOCAL_SOURCES: { schema: bool },
  DETECTOR_LISTEN: { schema: hostPort },
  DETECTOR_OBJECTS: { schema: bool },
  DETECTOR_TLS_CERT: { schema: z.string().trim().min(1, "must be the path of a PEM certificate file") },
  DETECTOR_TLS_KEY: { schema: z.string().trim().min(1, "must be the path of a PEM private key file") },
  DETECTOR_TLS_CA: { schema: z.string().trim().min(1, "must be the path of a PEM CA file") },
  CAMFLEET_API_TOKEN: { schema: z.string().min(1, "must not be empty") },
  CAMFLEET_DATA_DIR: { schema: z.string().trim().min(1, "must not be empty") },
  CAMFLEET_NATS_PORT: { schema: int(0, 65_535) },
  CAMFLEET_REPLICAS: { schema: int(1, 5) },
  CAMFLEET_ACTOR_KIND: { schema: id },
  GATEWAY_URL: { schema: httpUrl },
  CAMFLEET_CORS_ORIGINS: { schema: corsOrigins },
  ON_DEMAND_LINGER_MS: { schema: int(0, 3_600_000) },
  RELAY_MAX_VIEWERS_PER_CAMERA: { schema: int(1, 100_000) },
  RELAY_MAX_VIEWERS: { schema: int(1, 1_000_000) },
  WEBRTC_LOOPBACK_ONLY: { schema: bool },
  CAMFLEET_DETECTIONS_MAX_AGE_S: { schema: int(60, 10 * 365 * 86_400) },
  CAMFLEET_DETECTIONS_MAX_BYTES: { schema: int(-1, 2 ** 50) },
  CAMFLEET_DETECTIONS_REPLICAS: { schema: int(1, 5) },
  CAMFLEET_DETECTIONS_BUFFER: { schema: int(1, 1_000_000) },
  CAMFLEET_STATUS_MAX_BYTES: { schema: int(-1, 2 ** 50) },
  CAMFLEET_STORAGE: { schema: z.enum(["file", "memory"], "must be file or memory") },
} as const satisfies Record<string, { schema: z.ZodType; alias?: string }>;

type VarName = keyof typeof VARS;
type Parsed = { [K in VarName]?: z.output<(typeof VARS)[K]["schema"]> };

/** Every variable camfleet reads, with its single-worker alias; for docs and --help. */
export const CONFIG_VARIABLES: ReadonlyArray<{ name: string; alias?: string }> = Object.entries(VARS).map(([name, v]) => ({
  name,
  ...("alias" in v ? { alias: v.alias } : {}),
}));

/** NATS servers and credentials decided elsewhere (the CLI's --server, --creds, --context), used instead of the NATS_* variables. */
export interface NatsOverride {
  servers?: string[];
  settings: NatsAuthSettings;
}

/**
 * Environment → config. `natsOverride` (the CLI's --server, --creds,
 * --context resolution) replaces what the NATS_* variables say about servers
 * and credentials; the variables are still checked.
 */
export function loadConfig(env: Env, role: Role, natsOverride?: NatsOverride): Config {
  const parsed = parseVars(env, Object.keys(VARS) as VarName[]);
  let nats: { servers?: string[]; auth: NatsAuth };
  try {
    const chosen = natsOverride ?? natsSettingsFromEnv(parsed);
    nats = { ...(chosen.servers !== undefined ? { servers: chosen.servers } : {}), auth: readNatsAuth(chosen.settings) };
  } catch (err) {
    if (err instanceof NatsAuthError) throw new ConfigError(err.problems);
    throw err;
  }
  const tls = detectorTlsOf(parsed, role);

  return {
    ...(nats.servers !== undefined ? { natsServers: nats.servers } : {}),
    natsAuth: nats.auth,
    nodeId: parsed.NODE_ID ?? defaultNodeId(),
    maxCameras: parsed.MAX_CAMERAS ?? 32,
    httpPort: parsed.HTTP_PORT ?? DEFAULT_HTTP_PORT[role],
    httpHost: parsed.HTTP_HOST ?? "127.0.0.1",
    whipUrl: whipTemplate(parsed.WHIP_URL, parsed.MEDIAMTX_WHIP),
    aiEndpoint: parsed.AI_ENDPOINT ?? parsed.DETECTOR_LISTEN ?? "127.0.0.1:50051",
    ...(tls.client !== undefined ? { aiTls: tls.client } : {}),
    aiMaxFps: parsed.AI_MAX_FPS ?? 1,
    ...(parsed.AI_PROCESS_EVERY_N !== undefined ? { aiEveryN: parsed.AI_PROCESS_EVERY_N } : {}),
    aiTimeoutMs: parsed.AI_TIMEOUT_MS ?? 2000,
    leaseTtlMs: parsed.LEASE_TTL_MS ?? 3000,
    logLevel: parsed.LOG_LEVEL ?? "info",
    logFormat: parsed.LOG_FORMAT ?? "auto",
    allowLocalSources: parsed.ALLOW_LOCAL_SOURCES ?? role === "up",
    detectorListen: parsed.DETECTOR_LISTEN ?? "127.0.0.1:50051",
    detectorObjects: parsed.DETECTOR_OBJECTS ?? true,
    ...(tls.server !== undefined ? { detectorTls: tls.server } : {}),
    ...(parsed.CAMFLEET_API_TOKEN !== undefined ? { apiToken: parsed.CAMFLEET_API_TOKEN } : {}),
    dataDir: parsed.CAMFLEET_DATA_DIR ?? join(env.XDG_DATA_HOME ?? join(homedir(), ".local", "share"), "camfleet"),
    embeddedNatsPort: parsed.CAMFLEET_NATS_PORT ?? 4222,
    ...(parsed.CAMFLEET_REPLICAS !== undefined ? { replicas: parsed.CAMFLEET_REPLICAS } : {}),
    actorKind: parsed.CAMFLEET_ACTOR_KIND ?? "camera",
    ...(parsed.GATEWAY_URL !== undefined ? { gatewayUrl: parsed.GATEWAY_URL.replace(/\/+$/, "") } : {}),
    corsOrigins: typeof parsed.CAMFLEET_CORS_ORIGINS === "object" ? parsed.CAMFLEET_CORS_ORIGINS.map((o) => o.replace(/\/+$/, "")) : (parsed.CAMFLEET_CORS_ORIGINS ?? "*"),
    ...(parsed.MEDIAMTX_HLS !== undefined ? { mediamtxHls: parsed.MEDIAMTX_HLS.replace(/\/+$/, "") } : {}),
    ...(parsed.MEDIAMTX_RTSP !== undefined ? { mediamtxRtsp: parsed.MEDIAMTX_RTSP.replace(/\/+$/, "") } : {}),
    onDemandLingerMs: parsed.ON_DEMAND_LINGER_MS ?? 30_000,
    relayMaxViewersPerCamera: parsed.RELAY_MAX_VIEWERS_PER_CAMERA ?? 100,
    relayMaxViewers: parsed.RELAY_MAX_VIEWERS ?? 500,
    webrtcLoopbackOnly: parsed.WEBRTC_LOOPBACK_ONLY ?? false,
    // Unset stream limits stay unset: defaults fit the store when a stream is
    // created, and an unset limit is no opinion about an existing stream.
    detectionsStream: {
      ...(parsed.CAMFLEET_DETECTIONS_MAX_AGE_S !== undefined ? { maxAgeMs: parsed.CAMFLEET_DETECTIONS_MAX_AGE_S * 1000 } : {}),
      ...(parsed.CAMFLEET_DETECTIONS_MAX_BYTES !== undefined ? { maxBytes: parsed.CAMFLEET_DETECTIONS_MAX_BYTES } : {}),
      ...(parsed.CAMFLEET_DETECTIONS_REPLICAS !== undefined ? { replicas: parsed.CAMFLEET_DETECTIONS_REPLICAS } : {}),
    },
    statusStream: parsed.CAMFLEET_STATUS_MAX_BYTES !== undefined ? { maxBytes: parsed.CAMFLEET_STATUS_MAX_BYTES } : {},
    ...(parsed.CAMFLEET_STORAGE !== undefined ? { storage: parsed.CAMFLEET_STORAGE } : {}),
    detectionsBuffer: parsed.CAMFLEET_DETECTIONS_BUFFER ?? 10_000,
  };
}

/**
 * The detector connection's TLS files, read for the roles that use them: the
 * client side where a DetectorClient runs (node, gateway, up), the server side
 * where a detector is served (detector, up). In `up` the node talks to its own
 * detector unless AI_ENDPOINT points elsewhere, so a TLS detector without the
 * matching client settings would be a node that can never reach it: said here.
 */
function detectorTlsOf(parsed: Parsed, role: Role): { client?: DetectorClientTlsConfig; server?: DetectorServerTlsConfig } {
  const problems: string[] = [];
  const client = role === "node" || role === "gateway" || role === "up" ? readDetectorClientTls(parsed, readFileSync, problems) : undefined;
  const server = role === "detector" || role === "up" ? readDetectorServerTls(parsed, readFileSync, problems) : undefined;
  if (role === "up" && parsed.AI_ENDPOINT === undefined && problems.length === 0) {
    if (server !== undefined && client === undefined) {
      problems.push("DETECTOR_TLS_CERT makes the detector of `camfleet up` serve TLS, but AI_TLS_CA is unset, so its node would talk cleartext to it; set AI_TLS_CA to the CA that signed DETECTOR_TLS_CERT");
    } else if (server?.ca !== undefined && client?.cert === undefined) {
      problems.push("DETECTOR_TLS_CA makes the detector of `camfleet up` require client certificates, but AI_TLS_CERT is unset, so its node could not connect; set AI_TLS_CERT and AI_TLS_KEY to a certificate signed by DETECTOR_TLS_CA");
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...(client !== undefined ? { client } : {}), ...(server !== undefined ? { server } : {}) };
}

/** Parses the named variables; every bad one is a line of the ConfigError. */
function parseVars(env: Env, names: readonly VarName[]): Parsed {
  const problems: string[] = [];
  const parsed: Parsed = {};
  for (const name of names) {
    const spec: { schema: z.ZodType; alias?: string } = VARS[name];
    const alias = spec.alias;
    const source = env[name] !== undefined ? name : alias !== undefined && env[alias] !== undefined ? alias : undefined;
    if (source === undefined) continue;
    const raw = env[source] as string;
    const result = spec.schema.safeParse(raw);
    if (result.success) {
      (parsed as Record<string, unknown>)[name] = result.data;
    } else {
      const shown = SECRET_VARS.has(name) ? "" : ` (got ${JSON.stringify(redact(raw))})`;
      const label = source === name ? name : `${source} (alias of ${name})`;
      problems.push(`${label} ${result.error.issues[0]?.message ?? "is invalid"}${shown}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return parsed;
}

const NATS_VARS = ["NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY", "NATS_CREDS", "NATS_CA", "NATS_CERT", "NATS_KEY"] as const satisfies readonly VarName[];

/** What the NATS_* variables alone say (servers without credentials, credential settings); for the CLI, which layers its flags and a NATS context over them. */
export function natsEnvSettings(env: Env): NatsOverride {
  try {
    return natsSettingsFromEnv(parseVars(env, NATS_VARS));
  } catch (err) {
    if (err instanceof NatsAuthError) throw new ConfigError(err.problems);
    throw err;
  }
}

/**
 * The NATS_* variables as settings: credentials in NATS_URL count like
 * NATS_USER/NATS_PASSWORD or NATS_TOKEN (and setting both is an error, as is
 * any second method); a `tls://` URL requires TLS.
 */
function natsSettingsFromEnv(parsed: Parsed): NatsOverride {
  const split = parsed.NATS_URL !== undefined ? splitNatsUrls(parsed.NATS_URL, "NATS_URL") : undefined;
  if ((split?.user !== undefined || split?.token !== undefined) && [parsed.NATS_USER, parsed.NATS_PASSWORD, parsed.NATS_TOKEN].some((v) => v !== undefined)) {
    throw new NatsAuthError(["NATS_URL carries credentials and NATS_USER, NATS_PASSWORD or NATS_TOKEN is set too; give them once"]);
  }
  const value = (v: string | undefined, from: string) => (v !== undefined ? { value: v, from } : undefined);
  const file = (path: string | undefined, from: string) => (path !== undefined ? { path, from } : undefined);
  const candidates: NatsAuthSettings = {
    user: value(split?.user, "NATS_URL") ?? value(parsed.NATS_USER, "NATS_USER"),
    password: value(split?.password, "NATS_URL") ?? value(parsed.NATS_PASSWORD, "NATS_PASSWORD"),
    token: value(split?.token, "NATS_URL") ?? value(parsed.NATS_TOKEN, "NATS_TOKEN"),
    nkey: file(parsed.NATS_NKEY, "NATS_NKEY"),
    creds: file(parsed.NATS_CREDS, "NATS_CREDS"),
    ca: file(parsed.NATS_CA, "NATS_CA"),
    cert: file(parsed.NATS_CERT, "NATS_CERT"),
    key: file(parsed.NATS_KEY, "NATS_KEY"),
    tlsRequired: split?.tls === true,
  };
  // exactOptionalPropertyTypes: drop the unset ones.
  const settings = Object.fromEntries(Object.entries(candidates).filter(([, v]) => v !== undefined)) as NatsAuthSettings;
  return { ...(split !== undefined ? { servers: split.servers } : {}), settings };
}

/**
 * WHIP_URL as a template with `{camera}`. A URL without it gets
 * `/{camera}` appended; the single-worker MEDIAMTX_WHIP=http://host:8889
 * means http://host:8889/camera_{camera}/whip.
 */
export function whipTemplate(whipUrl: string | undefined, mediamtxWhip: string | undefined): string {
  if (whipUrl !== undefined) {
    return whipUrl.includes("{camera}") ? whipUrl : `${whipUrl.replace(/\/+$/, "")}/{camera}`;
  }
  if (mediamtxWhip !== undefined) return `${mediamtxWhip.replace(/\/+$/, "")}/camera_{camera}/whip`;
  return "http://127.0.0.1:8080/whip/{camera}";
}

/** The WHIP URL of one camera. */
export function whipUrlFor(template: string, camera: string): string {
  return template.replaceAll("{camera}", encodeURIComponent(camera));
}

/** A node id from the host name, made into a valid id token. */
export function defaultNodeId(host: string = hostname()): string {
  const cleaned = host.replace(/[^A-Za-z0-9_-]/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
  return cleaned === "" ? "node" : cleaned;
}

/** The config as it may be logged: secrets out, URLs redacted. */
export function describeConfig(config: Config): Record<string, unknown> {
  const { apiToken, natsServers, natsAuth, aiTls, detectorTls, ...rest } = config;
  return {
    ...rest,
    // The PEM paths, never the bytes (a private key among them).
    aiTls: aiTls?.paths ?? "off",
    detectorTls: detectorTls?.paths ?? "off",
    natsServers: natsServers?.map(redact) ?? "embedded",
    natsAuth: natsAuth.summary,
    whipUrl: redact(config.whipUrl),
    apiToken: apiToken === undefined ? "unset" : "set",
  };
}
