/**
 * The actor runtime's public face. Three parts, each with its own index:
 * `node/` (what a camfleet node runs), `client/` (what talks to a cluster),
 * `infra/` (NATS and child processes); config, logging and metrics are shared
 * by all three. Media is not here: it lives in `media/`.
 */
export { ConfigError, CONFIG_VARIABLES, defaultNodeId, describeConfig, loadConfig, natsEnvSettings, whipTemplate, whipUrlFor } from "./config.ts";
export type { Config, NatsOverride, Role } from "./config.ts";
export { NatsAuthError, NO_NATS_AUTH, readNatsAuth, splitNatsUrls } from "./nats-auth.ts";
export type { NatsAuth, NatsAuthSettings, SettingFile, SettingValue, SplitNatsUrls } from "./nats-auth.ts";
export { createLogger, silentLogger } from "./logger.ts";
export type { Logger, LoggerOptions } from "./logger.ts";
export { createRegistry, NodeMetrics, perRegistry } from "./metrics.ts";
export { every, ManualClock, realClock, sleep } from "./clock.ts";
export type { Clock, Repeating, Timer } from "./clock.ts";
export { backoffDelay, equalJitter, nominalDelay } from "./backoff.ts";
export type { Backoff } from "./backoff.ts";
export { DeadlineError, timedOut, withDeadline, withTimeout } from "./deadline.ts";
export { LOG_MESSAGES } from "./log-messages.ts";
export type { LogMessage } from "./log-messages.ts";

export { ControlClient, parseSince, startAlertConsumer, tailEvents } from "./client/index.ts";
export type { AlertConsumer, AlertConsumerOptions, CamfleetEvent, ControlClientOptions, ControlResult, EventMeta, EventType, StartAt, TailOptions, WriteOptions } from "./client/index.ts";

export {
  applyStreams,
  connectNats,
  defaultReplicas,
  describeChanges,
  describeExit,
  EmbeddedNatsPortInUseError,
  ensureJetStream,
  findExecutable,
  formatBytes,
  JetStreamStorageError,
  jetStreamOptions,
  isExecutable,
  isCasConflict,
  isTransientNatsError,
  KvClaims,
  openKvWithTimeout,
  cameraSpecOf,
  toCamfleetError,
  NatsServerNotFoundError,
  NatsServerProcess,
  NatsServerStartError,
  retryTransient,
  pdeathsigCommand,
  SETPRIV,
  startEmbeddedNats,
  superviseSpawn,
} from "./infra/index.ts";
export type {
  ChildExit,
  ConnectOptions,
  EmbeddedNatsOptions,
  FieldChange,
  JetStreamSetupOptions,
  KvClaimOptions,
  NatsClusterOptions,
  NatsConnection,
  NatsServerExit,
  NatsServerOptions,
  NatsServerPorts,
  RetryTransientOptions,
  StdioSlot,
  StorageKind,
  StreamChange,
  StreamLimits,
  SupervisedChild,
  SuperviseOptions,
} from "./infra/index.ts";

export {
  ActorSlot,
  ageOf,
  ClusterView,
  BufferedPublisher,
  DEFAULT_BACKOFF,
  DEFAULT_PLACEMENT,
  fairShare,
  FleetNode,
  handoverCount,
  hashUnit,
  initialMemory,
  isExpired,
  KindRegistry,
  LeaseKeeper,
  leaseTiming,
  rankCandidates,
  reconcile,
  rendezvousScore,
  respondSafely,
  RouteWitness,
  runtimeError,
  startOpsServer,
} from "./node/index.ts";
export type {
  Actor,
  ActorContext,
  ActorKind,
  BackoffPolicy,
  BufferedPublisherOptions,
  ClusterSnapshot,
  DetectionOutcome,
  DetectionReport,
  FleetNodeOptions,
  LeaseLossReason,
  NodeLoad,
  OpsServer,
  OpsServerOptions,
  OwnedLease,
  PlacementMemory,
  PlacementTuning,
  PublishOutcome,
  ReconcileDecision,
  ReconcileInput,
  ReleaseReason,
  RouteWitnessOptions,
  SelfState,
  StatusReport,
  StopReason,
  ViewerReport,
} from "./node/index.ts";
