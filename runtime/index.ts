/**
 * The actor runtime's public face. Three parts, each with its own index:
 * `node/` (what a camfleet node runs), `client/` (what talks to a cluster),
 * `infra/` (NATS and child processes); config, logging and metrics are shared
 * by all three. Media is not here: it lives in `media/`.
 */
export { ConfigError, CONFIG_VARIABLES, defaultNodeId, describeConfig, loadConfig, whipTemplate, whipUrlFor } from "./config.ts";
export type { Config, Role } from "./config.ts";
export { createLogger, silentLogger } from "./logger.ts";
export type { Logger, LoggerOptions } from "./logger.ts";
export { createRegistry, NodeMetrics, perRegistry } from "./metrics.ts";
export { ManualClock, realClock, sleep } from "./clock.ts";
export type { Clock, Timer } from "./clock.ts";
export { backoffDelay as nextBackoffDelay, equalJitter, nominalDelay } from "./backoff.ts";
export type { Backoff } from "./backoff.ts";
export { DeadlineError, timedOut, withDeadline, withTimeout } from "./deadline.ts";

export { ControlClient, parseSince, startAlertConsumer, tailEvents } from "./client/index.ts";
export type { AlertConsumer, AlertConsumerOptions, CamfleetEvent, ControlClientOptions, ControlResult, EventMeta, EventType, StartAt, TailOptions } from "./client/index.ts";

export {
  connectNats,
  defaultReplicas,
  describeExit,
  EmbeddedNatsPortInUseError,
  ensureJetStream,
  findExecutable,
  isExecutable,
  isTransientNatsError,
  cameraSpecOf,
  toCamfleetError,
  NatsServerNotFoundError,
  NatsServerProcess,
  NatsServerStartError,
  retryTransient,
  SETPRIV,
  startEmbeddedNats,
  superviseSpawn,
} from "./infra/index.ts";
export type {
  ChildExit,
  ConnectOptions,
  EmbeddedNatsOptions,
  JetStreamSetupOptions,
  NatsClusterOptions,
  NatsConnection,
  NatsServerExit,
  NatsServerOptions,
  NatsServerPorts,
  RetryTransientOptions,
  StdioSlot,
  StreamLimits,
  SupervisedChild,
  SuperviseOptions,
} from "./infra/index.ts";

export {
  ActorSlot,
  backoffDelay,
  ClusterView,
  BufferedPublisher,
  DEFAULT_BACKOFF,
  DEFAULT_PLACEMENT,
  fairShare,
  FleetNode,
  handoverCount,
  hashUnit,
  isCasConflict,
  KindRegistry,
  LeaseKeeper,
  leaseTiming,
  rankCandidates,
  rendezvousScore,
  runtimeError,
  startOpsServer,
} from "./node/index.ts";
export type {
  Actor,
  ActorContext,
  ActorKind,
  BackoffPolicy,
  BufferedPublisherOptions,
  DetectionOutcome,
  DetectionReport,
  FleetNodeOptions,
  LeaseLossReason,
  NodeLoad,
  OpsServer,
  OpsServerOptions,
  OwnedLease,
  PlacementTuning,
  PublishOutcome,
  StatusReport,
  StopReason,
  ViewerReport,
} from "./node/index.ts";
