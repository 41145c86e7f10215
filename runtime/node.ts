import type { Registry } from "prom-client";
import type { Config } from "./config.ts";
import { describeConfig } from "./config.ts";
import { startEmbeddedNats } from "./embedded-nats.ts";
import { ensureJetStream } from "./jetstream-setup.ts";
import type { Logger } from "./logger.ts";
import { NodeMetrics } from "./metrics.ts";
import { connectNats, type NatsConnection } from "./nats.ts";
import type { NatsServerProcess } from "./nats-server.ts";
import { startOpsServer, type OpsServer } from "./ops-http.ts";

export interface FleetNodeOptions {
  config: Config;
  logger: Logger;
  registry: Registry;
  version: string;
  /** Aborts a start that is still waiting for NATS. */
  signal?: AbortSignal;
}

/**
 * A camfleet node process: NATS (embedded when NATS_URL is unset), the
 * JetStream streams and buckets, and /metrics, /healthz, /readyz.
 * Leases, placement and control are added by the runtime issue.
 */
export class FleetNode {
  readonly id: string;
  readonly metrics: NodeMetrics;
  private nc?: NatsConnection;
  private embedded?: NatsServerProcess;
  private ops?: OpsServer;
  private setUp = false;
  private stopping?: Promise<void>;

  private constructor(private readonly options: FleetNodeOptions) {
    this.id = options.config.nodeId;
    this.metrics = new NodeMetrics(options.registry);
    this.metrics.capacity.set(options.config.maxCameras);
  }

  static async start(options: FleetNodeOptions): Promise<FleetNode> {
    const node = new FleetNode(options);
    try {
      await node.boot();
    } catch (err) {
      await node.stop();
      throw err;
    }
    return node;
  }

  /** NATS client URL the node uses (the embedded server's, when there is one). */
  get natsServers(): string[] {
    return this.embedded !== undefined ? [this.embedded.url] : (this.options.config.natsServers ?? []);
  }

  get opsUrl(): string | undefined {
    return this.ops?.url;
  }

  get connection(): NatsConnection {
    if (this.nc === undefined) throw new Error("node is not connected");
    return this.nc;
  }

  private async boot(): Promise<void> {
    const { config, logger: log } = this.options;
    log.info({ config: describeConfig(config), version: this.options.version }, "starting node");
    // Ops first, so /healthz answers and /readyz explains while NATS comes up.
    this.ops = await startOpsServer({
      host: config.httpHost,
      port: config.httpPort,
      registry: this.options.registry,
      notReadyReason: () => this.notReadyReason(),
      logger: log,
    });
    log.info({ url: this.ops.url }, "serving /metrics, /healthz, /readyz");

    if (config.natsServers === undefined) {
      this.embedded = await startEmbeddedNats({ dataDir: config.dataDir, port: config.embeddedNatsPort, logger: log });
    }
    this.nc = await connectNats({
      servers: this.natsServers,
      name: `camfleet-node-${this.id}`,
      logger: log,
      metrics: this.metrics,
      retryFirstConnect: true,
      ...(this.options.signal !== undefined ? { signal: this.options.signal } : {}),
    });
    const { replicas } = await ensureJetStream(this.nc, { ...(config.replicas !== undefined ? { replicas: config.replicas } : {}), logger: log });
    this.setUp = true;
    log.info({ replicas }, "node ready");
  }

  private notReadyReason(): string | undefined {
    if (this.nc === undefined) return "connecting to NATS";
    if (this.nc.isClosed()) return "NATS connection closed";
    if (!this.setUp) return "setting up JetStream streams and buckets";
    return undefined;
  }

  /** Stops everything this node started, in reverse order. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.options.logger;
      if (this.nc !== undefined && !this.nc.isClosed()) {
        // drain: finish in-flight handlers and flush publishes before closing.
        await this.nc.drain().catch((err: unknown) => log.warn({ err }, "draining the NATS connection failed"));
      }
      await this.ops?.close();
      if (this.embedded !== undefined) {
        await this.embedded.stop();
        log.info("embedded nats-server stopped");
      }
      log.info("node stopped");
    })();
    return this.stopping;
  }
}
