import type { AddressInfo } from "node:net";
import { Kvm } from "@nats-io/kv";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { connectNats, ControlClient, ensureJetStream, jetStreamOptions, LOG_MESSAGES, openKvWithTimeout, type Config, type Logger, type NatsAuth, type NatsConnection } from "../runtime/index.ts";
import { BUCKETS } from "../subjects/index.ts";
import { GatewayCore, type GatewayCoreOptions } from "./core.ts";
import { createHttp } from "./http.ts";
import { eventRoutes } from "./routes/events.ts";
import type { EventFeeds } from "./event-hub.ts";
import { cameraRoutes } from "./routes/cameras.ts";
import { legacyRoutes, packageVersion } from "./routes/legacy.ts";
import { documentedRoutes, openApiDocument } from "./openapi.ts";
import { mediaRoutes } from "./routes/media.ts";
import { opsRoutes } from "./routes/ops.ts";
import { pictureRoutes } from "./routes/pictures.ts";
import { uiRoutes } from "./routes/ui.ts";

/**
 * `camfleet gateway`: the HTTP gateway of the contract (docs/contract.md) on HTTP_PORT (8080),
 * carrying the built-in WHIP/WHEP relay. Stateless towards the cluster
 * (any number of gateways); reaches actors over NATS only.
 */

export interface GatewayOptions {
  config: Config;
  logger: Logger;
  registry: Registry;
  /** NATS to use; default NATS_URL, else the embedded server of a `camfleet node`/`up` on this host (127.0.0.1:CAMFLEET_NATS_PORT). The gateway never embeds a server. */
  natsServers?: string[];
  /** Credentials for `natsServers`; default none there (the embedded server of `up` has no auth). Without `natsServers`, config.natsAuth. */
  natsAuth?: NatsAuth;
  /** Keep WebRTC on 127.0.0.1 (tests). Default false. */
  loopbackOnly?: boolean;
  /** Set up streams and buckets if no node has yet. Default true. */
  ensureJetStream?: boolean;
  /** Timing overrides for tests. */
  tuning?: Pick<GatewayCoreOptions, "relayTiming" | "viewerTtlMs" | "relayTtlMs">;
  signal?: AbortSignal;
  /** Extra readiness, e.g. the node of `camfleet up`. */
  notReadyReason?: () => string | undefined;
  /** The solutions the detector (AI_ENDPOINT) offers, for GET /'s capabilities; rejects when it cannot be asked. */
  detectorSolutions?: () => Promise<string[]>;
}

export interface Gateway {
  /** Bound base URL (http://host:port). */
  readonly url: string;
  /** Public base URL, in Location headers and redirects. */
  readonly publicUrl: string;
  readonly core: GatewayCore;
  /** Every route registered, `METHOD /path/{param}` (HEAD and OPTIONS left out). */
  readonly routes: readonly string[];
  stop(): Promise<void>;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { config, logger: log } = options;
  const servers = options.natsServers ?? config.natsServers ?? [`nats://127.0.0.1:${config.embeddedNatsPort}`];
  if (options.natsServers === undefined && config.natsServers === undefined) {
    log.info({ servers }, "NATS_URL unset: using the embedded nats-server of a node on this host");
  }
  const app = createHttp({ logger: log, corsOrigins: config.corsOrigins, ...(config.apiToken !== undefined ? { apiToken: config.apiToken } : {}) });
  let nc: NatsConnection | undefined;
  let core: GatewayCore | undefined;
  const routes: string[] = [];
  // Every route as registered, for /openapi.json's check and the test that holds the document to them.
  app.addHook("onRoute", (route) => {
    for (const m of [route.method].flat()) if (m !== "HEAD" && m !== "OPTIONS") routes.push(`${m} ${route.url.replace(/:(\w+)/g, "{$1}")}`);
  });
  const stop = async () => {
    await app.close().catch(() => undefined);
    await core?.stop().catch((err: unknown) => log.warn({ err }, "stopping the relay failed"));
    if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => nc?.close());
  };
  try {
    const auth = options.natsServers !== undefined ? options.natsAuth : config.natsAuth;
    nc = await connectNats({
      servers,
      ...(auth !== undefined ? { auth } : {}),
      name: `camfleet-gateway-${config.nodeId}`,
      logger: log,
      retryFirstConnect: true,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
    if (options.ensureJetStream ?? true) {
      // The gateway's own settings, like a node's: it creates what is missing and changes nothing that exists.
      await ensureJetStream(nc, jetStreamOptions(config, log));
    }
    const kvm = new Kvm(nc);
    // Relay claims give up after 2 s, not the JetStream default 5 s (Kvm.open's own timeout option does not reach writes).
    const [cameras, leases, relays] = await Promise.all([kvm.open(BUCKETS.cameras), kvm.open(BUCKETS.leases), openKvWithTimeout(nc, BUCKETS.relays, 2000)]);

    const conn = nc;
    const forward = new Histogram({
      name: "camfleet_relay_forward_seconds",
      help: "Time from a packet's arrival at the relay to its last viewer copy handed to the socket (the relay's added latency)",
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25],
      registers: [options.registry],
    });
    core = new GatewayCore({
      onForwarded: (ms) => forward.observe(ms / 1000),
      config,
      logger: log,
      nc: conn,
      cameras,
      leases,
      relays,
      ...(options.loopbackOnly !== undefined ? { loopbackOnly: options.loopbackOnly } : {}),
      ...options.tuning,
    });
    const c = core;
    registerRelayMetrics(options.registry, c);
    const control = new ControlClient(conn);
    opsRoutes(app, {
      registry: options.registry,
      notReadyReason: () => (conn.isClosed() ? "NATS connection closed" : options.notReadyReason?.()),
      control,
    });
    // Built once, on first request (the public URL is known only after listen): it cannot change while the gateway runs.
    let openApi: Record<string, unknown> | undefined;
    app.get("/openapi.json", async (_req, reply) => {
      openApi ??= openApiDocument({ version: packageVersion(), serverUrl: c.publicUrl, authRequired: config.apiToken !== undefined });
      return reply.header("cache-control", "no-store").send(openApi);
    });
    mediaRoutes(app, c);
    registerEventMetrics(options.registry, eventRoutes(app, { nc: conn, logger: log }));
    legacyRoutes(app, { core: c, control, ...(options.detectorSolutions !== undefined ? { detectorSolutions: options.detectorSolutions } : {}) });
    cameraRoutes(app, { core: c, control });
    pictureRoutes(app, { core: c, control, logger: log, registry: options.registry });
    uiRoutes(app, { nc: conn });
    await app.listen({ port: config.httpPort, host: config.httpHost });
    const documented = new Set(documentedRoutes());
    const undocumented = routes.filter((r) => !documented.has(r));
    if (undocumented.length > 0) log.warn({ routes: undocumented }, "routes missing from /openapi.json");
    const { port } = app.server.address() as AddressInfo;
    const host = config.httpHost.includes(":") ? `[${config.httpHost}]` : config.httpHost;
    const url = `http://${host}:${port}`;
    const publicUrl = config.gatewayUrl ?? url;
    c.publicUrl = publicUrl;
    log.info({ url, publicUrl, relay: "built-in" }, LOG_MESSAGES.gatewayReady);
    return { url, publicUrl, core: c, routes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function registerEventMetrics(registry: Registry, feeds: EventFeeds): void {
  new Gauge({
    name: "camfleet_gateway_event_clients",
    help: "SSE and WebSocket event clients connected to this gateway",
    registers: [registry],
    collect() {
      this.set(feeds.clientCount);
    },
  });
  new Gauge({
    name: "camfleet_gateway_event_consumers",
    help: "JetStream ordered consumers this gateway reads for its event clients (one per stream and filter in use)",
    registers: [registry],
    collect() {
      this.set(feeds.hubCount);
    },
  });
  new Counter({
    name: "camfleet_gateway_event_clients_ended_total",
    help: "Event clients the gateway ended, by reason (slow_client, shutdown, feed_failed)",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(feeds.ended)) this.inc({ reason }, n);
    },
  });
}

function registerRelayMetrics(registry: Registry, core: GatewayCore): void {
  new Gauge({
    name: "camfleet_relay_viewers",
    help: "WHEP viewers of each camera on this gateway (waiting ones included)",
    labelNames: ["camera"],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of core.relay.stats()) this.set({ camera: s.camera_id }, s.viewers);
    },
  });
  new Gauge({
    name: "camfleet_relay_publishing",
    help: "1 while a WHIP publisher of the camera is connected to this gateway",
    labelNames: ["camera"],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of core.relay.stats()) this.set({ camera: s.camera_id }, s.publishing ? 1 : 0);
    },
  });
}
