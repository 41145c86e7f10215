/** The generic actor runtime: node, NATS connection, config, logging, metrics. Knows no actor kind. */
export { ConfigError, CONFIG_VARIABLES, defaultNodeId, describeConfig, loadConfig, whipTemplate, whipUrlFor } from "./config.ts";
export type { Config, Role } from "./config.ts";
export { EmbeddedNatsPortInUseError, startEmbeddedNats } from "./embedded-nats.ts";
export type { EmbeddedNatsOptions } from "./embedded-nats.ts";
export { defaultReplicas, ensureJetStream } from "./jetstream-setup.ts";
export type { JetStreamSetupOptions, StreamLimits } from "./jetstream-setup.ts";
export { createLogger, silentLogger } from "./logger.ts";
export type { Logger, LoggerOptions } from "./logger.ts";
export { createRegistry, NodeMetrics } from "./metrics.ts";
export { connectNats } from "./nats.ts";
export type { ConnectOptions, NatsConnection } from "./nats.ts";
export { freePort, NatsServerNotFoundError, NatsServerProcess, NatsServerStartError } from "./nats-server.ts";
export type { NatsClusterOptions, NatsServerExit, NatsServerOptions } from "./nats-server.ts";
export { FleetNode } from "./node.ts";
export type { FleetNodeOptions } from "./node.ts";
export { startOpsServer } from "./ops-http.ts";
export type { OpsServer, OpsServerOptions } from "./ops-http.ts";
