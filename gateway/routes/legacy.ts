import { readFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";
import { toCamfleetError, type ControlClient } from "../../runtime/index.ts";
import { assertId, CamfleetError, http as httpBodies, parseOrThrow, redact, type CameraSpec, type CameraStatus, type NodeInfo } from "../../subjects/index.ts";
import type { GatewayCore } from "../core.ts";

/**
 * The single worker's REST routes, in its shapes, so clients scripted
 * against it run unchanged (docs/contract.md, "HTTP gateway"):
 *   GET /                         worker info and capabilities
 *   GET /cameras                  every camera with its state
 *   POST /cameras/{id}/start      {stream_url, solutions} → {camera_id, status: "started", stream_url, message}
 *   POST /cameras/{id}/stop       → {camera_id, status: "stopped", message}
 *   GET /cameras/{id}/status      the worker's status shape plus camfleet's state, node, epoch, error, viewers
 *   GET /system/stats             per node and cluster totals
 * Everything goes through the control subjects; nothing here touches KV.
 */
export interface LegacyDeps {
  core: GatewayCore;
  control: ControlClient;
  /** camfleet's version (package.json). */
  version?: string;
  /** The detector's solutions (gRPC ListSolutions); rejects when it cannot be asked. */
  detectorSolutions?: () => Promise<string[]>;
}

/** How long GET / reuses the detector's answer, ms: a probe or a dashboard polling / must not mean a gRPC call each. */
const SOLUTIONS_TTL_MS = 10_000;

export function legacyRoutes(root: FastifyInstance, deps: LegacyDeps): void {
  void root.register(async (app) => legacyScope(app, deps));
}

/** In a scope of its own: only these routes take an empty body with `Content-Type: application/json`. */
async function legacyScope(app: FastifyInstance, deps: LegacyDeps): Promise<void> {
  const { core, control } = deps;
  const version = deps.version ?? packageVersion();

  // Worker clients POST start/stop with a JSON content type and no body (curl -H, some HTTP libraries); fastify would say 400.
  const json = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    if (body === "") return done(null, undefined);
    return json(req, body as string, done);
  });

  let solutions: { at: number; value: Promise<string[] | null> } | undefined;
  const detectorSolutions = (): Promise<string[] | null> => {
    const ask = deps.detectorSolutions;
    if (ask === undefined) return Promise.resolve(null);
    if (solutions === undefined || Date.now() - solutions.at > SOLUTIONS_TTL_MS) {
      // A detector that is down is "unknown" (null), not an error of GET /.
      solutions = { at: Date.now(), value: ask().catch(() => null) };
    }
    return solutions.value;
  };

  app.get("/", async () => {
    // Worker info must answer while no node is up (a fresh gateway, a probe): counts are then unknown, not an error.
    const [nodes, cameras, offered] = await Promise.all([
      control.listNodes().then((r) => r.nodes.length, unavailableAs(0)),
      control.listCameras({ limit: 1 }).then((r) => r.total ?? null, unavailableAs(null)),
      detectorSolutions(),
    ]);
    return {
      name: "camfleet",
      version,
      gateway: core.gatewayId,
      url: core.publicUrl,
      nodes,
      cameras,
      capabilities: {
        solutions: offered,
        webrtc: true,
        hls: core.config.mediamtxHls !== undefined,
        rtsp: core.config.mediamtxRtsp !== undefined,
      },
    };
  });

  app.get<{ Querystring: Record<string, string | undefined> }>("/cameras", async (req) => {
    // The worker listed everything at once; `limit`/`after` ask for one page instead, and the reply then has `next`.
    const query = parseOrThrow(httpBodies.camerasListQuery, req.query, "query");
    const paged = query.limit !== undefined || query.after !== undefined;
    const page = paged ? await control.listCameras(query) : undefined;
    const cameras = page?.cameras ?? (await control.listAllCameras({ ...(query.tenant !== undefined ? { tenant: query.tenant } : {}), ...(query.site !== undefined ? { site: query.site } : {}) }));
    return {
      cameras: cameras.map(({ camera, owner, state }) => ({
        camera_id: camera.id,
        name: camera.name ?? null,
        stream_url: camera.url,
        solutions: camera.solutions,
        enabled: camera.enabled,
        active: camera.enabled && owner !== undefined && state !== "STOPPED",
        // Held but not reported yet: its actor is starting.
        state: state ?? (owner !== undefined ? "CONNECTING" : "STOPPED"),
        node: owner ?? null,
        tenant: camera.tenant,
        site: camera.site,
      })),
      total: page?.total ?? cameras.length,
      ...(page?.next !== undefined ? { next: page.next } : {}),
    };
  });

  app.post<{ Params: { id: string } }>("/cameras/:id/start", async (req) => {
    const id = assertId("camera", req.params.id);
    const body = parseOrThrow(httpBodies.legacyStartRequest, req.body ?? {}, "start request");
    const before = await control.getCamera(id).catch((err: unknown) => {
      if (err instanceof CamfleetError && err.code === "NOT_FOUND") return undefined;
      throw err;
    });
    const wasRunning = before?.camera.enabled === true && before.lease !== undefined;
    // The single worker's start is the camera's whole configuration: the URL and solutions given, analysis on when any are.
    const { camera } = await control.startCamera(id, { url: body.stream_url, solutions: body.solutions, ai: { enabled: body.solutions.length > 0 } });
    return {
      camera_id: id,
      status: "started",
      stream_url: redact(camera.url),
      message: before === undefined ? `camera ${id} created and started` : wasRunning ? `camera ${id} is already running` : `camera ${id} started`,
    };
  });

  app.post<{ Params: { id: string } }>("/cameras/:id/stop", async (req) => {
    const id = assertId("camera", req.params.id);
    parseOrThrow(httpBodies.noBody, req.body, "stop request");
    await control.stopCamera(id);
    return { camera_id: id, status: "stopped", message: `camera ${id} stopped` };
  });

  app.get<{ Params: { id: string } }>("/cameras/:id/status", async (req) => {
    const id = assertId("camera", req.params.id);
    // Spec and lease straight from KV (the gateway reads both buckets anyway): one NATS request, to the owner, not two.
    const [camera, lease] = await Promise.all([core.cameraSpec(id), core.lease(id)]).catch((err: unknown) => {
      throw toCamfleetError(err, "JetStream");
    });
    // No lease: nobody runs it (stopped, or waiting for a node). A lease whose holder has just let go answers NOT_FOUND too.
    const status =
      lease === undefined
        ? undefined
        : await control.cameraStatus(id).catch((err: unknown) => {
            if (err instanceof CamfleetError && err.code === "NOT_FOUND") return undefined;
            throw err;
          });
    return legacyStatus(camera, status);
  });

  app.get("/system/stats", async () => {
    const { nodes } = await control.listNodes();
    const now = Date.now();
    return {
      nodes: nodes.map((n) => nodeStats(n, now)),
      cluster: {
        nodes: nodes.length,
        cameras: sum(nodes, (n) => n.cameras),
        capacity: sum(nodes, (n) => n.capacity),
        draining: nodes.filter((n) => n.draining === true).length,
        memory_bytes: sum(nodes, (n) => n.rss_bytes ?? 0),
      },
      gateway: { id: core.gatewayId, url: core.publicUrl, viewers: core.relay.totalViewers() },
    };
  });
}

/** The single worker's `GET /cameras/{id}/status` shape, with camfleet's own fields beside it. */
export function legacyStatus(camera: CameraSpec, status: CameraStatus | undefined) {
  const streaming = status?.state === "STREAMING";
  const sessionUrl = status?.whip?.session_url;
  return {
    camera_id: camera.id,
    active: camera.enabled && status !== undefined && status.state !== "STOPPED",
    stream_info: {
      fps: status?.stream?.fps ?? 0,
      width: status?.stream?.width ?? 0,
      height: status?.stream?.height ?? 0,
      connected: streaming,
    },
    processing_info: {
      frames_processed: status?.frames.received ?? 0,
      frames_sent_ai: status?.frames.sent_ai ?? 0,
      avg_process_time: `${Math.round(status?.avg_inference_ms ?? 0)}ms`,
    },
    webrtc_info: {
      session_id: sessionUrl !== undefined ? (sessionUrl.split("/").filter((p) => p !== "").pop() ?? null) : null,
      active: status?.publishing ?? false,
      uptime: formatDuration(status?.whip?.uptime_s ?? 0),
    },
    state: status?.state ?? "STOPPED",
    node: status?.node ?? null,
    epoch: status?.epoch ?? null,
    error: status?.error ?? null,
    viewers: status?.viewers ?? 0,
  };
}

function nodeStats(n: NodeInfo, now: number) {
  const uptimeS = Math.max(0, Math.floor((now - n.started_ts) / 1000));
  return {
    node: n.node,
    version: n.version,
    cameras: n.cameras,
    capacity: n.capacity,
    draining: n.draining === true,
    started_ts: n.started_ts,
    heartbeat_ts: n.heartbeat_ts,
    uptime_s: uptimeS,
    uptime: formatDuration(uptimeS),
    cpu_percent: n.cpu_percent ?? null,
    memory_bytes: n.rss_bytes ?? null,
  };
}

/** Seconds as the single worker wrote them: `45s`, `5m30s`, `2h3m4s`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) return `${h}h${m}m${rest}s`;
  if (m > 0) return `${m}m${rest}s`;
  return `${rest}s`;
}

function sum<T>(items: T[], f: (t: T) => number): number {
  return items.reduce((acc, t) => acc + f(t), 0);
}

/** UNAVAILABLE (no node up) becomes `value`; anything else still fails the request. */
function unavailableAs<T>(value: T): (err: unknown) => T {
  return (err) => {
    if (err instanceof CamfleetError && err.code === "UNAVAILABLE") return value;
    throw err;
  };
}

/** package.json: two folders up from the sources' gateway/routes/, three from their build in dist/gateway/routes/. */
export function packageVersion(): string {
  for (const rel of ["../../package.json", "../../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "camfleet" && typeof pkg.version === "string") return pkg.version;
    } catch {
      // try the next one
    }
  }
  return "unknown";
}
