import type { AddressInfo } from "node:net";
import { Kvm } from "@nats-io/kv";
import { Gauge, Histogram, type Registry } from "prom-client";
import { connectNats, ControlClient, ensureJetStream, LOG_MESSAGES, type Config, type Logger, type NatsConnection } from "../runtime/index.ts";
import { BUCKETS } from "../subjects/index.ts";
import { GatewayCore, type GatewayCoreOptions } from "./core.ts";
import { createHttp } from "./http.ts";
import { eventRoutes } from "./routes/events.ts";
import { cameraRoutes } from "./routes/cameras.ts";
import { legacyRoutes } from "./routes/legacy.ts";
import { mediaRoutes } from "./routes/media.ts";
import { opsRoutes } from "./routes/ops.ts";
import { pictureRoutes } from "./routes/pictures.ts";

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
  /** Keep WebRTC on 127.0.0.1 (tests). Default false. */
  loopbackOnly?: boolean;
  /** Set up streams and buckets if no node has yet. Default true. */
  ensureJetStream?: boolean;
  /** Timing overrides for tests. */
  tuning?: Pick<GatewayCoreOptions, "relayTiming" | "viewerTtlMs" | "relayTtlMs">;
  signal?: AbortSignal;
  /** Extra readiness, e.g. the node of `camfleet up`. */
  notReadyReason?: () => string | undefined;
}

export interface Gateway {
  /** Bound base URL (http://host:port). */
  readonly url: string;
  /** Public base URL, in Location headers and redirects. */
  readonly publicUrl: string;
  readonly core: GatewayCore;
  stop(): Promise<void>;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { config, logger: log } = options;
  const servers = options.natsServers ?? config.natsServers ?? [`nats://127.0.0.1:${config.embeddedNatsPort}`];
  if (options.natsServers === undefined && config.natsServers === undefined) {
    log.info({ servers }, "NATS_URL unset: using the embedded nats-server of a node on this host");
  }
  const app = createHttp({ logger: log, ...(config.apiToken !== undefined ? { apiToken: config.apiToken } : {}) });
  let nc: NatsConnection | undefined;
  let core: GatewayCore | undefined;
  const stop = async () => {
    await app.close().catch(() => undefined);
    await core?.stop().catch((err: unknown) => log.warn({ err }, "stopping the relay failed"));
    if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => nc?.close());
  };
  try {
    nc = await connectNats({
      servers,
      name: `camfleet-gateway-${config.nodeId}`,
      logger: log,
      retryFirstConnect: true,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
    if (options.ensureJetStream ?? true) {
      await ensureJetStream(nc, { ...(config.replicas !== undefined ? { replicas: config.replicas } : {}), logger: log });
    }
    const kvm = new Kvm(nc);
    const [cameras, relays] = await Promise.all([kvm.open(BUCKETS.cameras), kvm.open(BUCKETS.relays, { timeout: 2000 })]);

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
      relays,
      ...(options.loopbackOnly !== undefined ? { loopbackOnly: options.loopbackOnly } : {}),
      ...options.tuning,
    });
    const c = core;
    registerRelayMetrics(options.registry, c);
    opsRoutes(app, {
      registry: options.registry,
      notReadyReason: () => (conn.isClosed() ? "NATS connection closed" : options.notReadyReason?.()),
    });
    mediaRoutes(app, c);
    eventRoutes(app, { nc: conn, logger: log });
    const control = new ControlClient(conn);
    legacyRoutes(app, { core: c, control });
    cameraRoutes(app, { core: c, control });
    pictureRoutes(app, { core: c, control, logger: log, registry: options.registry });
    await app.listen({ port: config.httpPort, host: config.httpHost });
    const { port } = app.server.address() as AddressInfo;
    const host = config.httpHost.includes(":") ? `[${config.httpHost}]` : config.httpHost;
    const url = `http://${host}:${port}`;
    const publicUrl = config.gatewayUrl ?? url;
    c.publicUrl = publicUrl;
    log.info({ url, publicUrl, relay: "built-in" }, LOG_MESSAGES.gatewayReady);
    return { url, publicUrl, core: c, stop };
  } catch (err) {
    await stop();
    throw err;
  }
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
