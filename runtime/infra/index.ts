/** NATS and processes: connecting, the nats-server child (embedded or for tests), JetStream set-up, supervised child processes. */
export { describeExit, findExecutable, isExecutable, pdeathsigCommand, SETPRIV, superviseSpawn } from "./child-process.ts";
export type { ChildExit, StdioSlot, SupervisedChild, SuperviseOptions } from "./child-process.ts";
export { EmbeddedNatsPortInUseError, startEmbeddedNats } from "./embedded-nats.ts";
export type { EmbeddedNatsOptions } from "./embedded-nats.ts";
export { applyStreams, defaultReplicas, describeChanges, ensureJetStream, jetStreamOptions } from "./jetstream-setup.ts";
export type { FieldChange, JetStreamSetupOptions, StreamChange, StreamLimits } from "./jetstream-setup.ts";
export { formatBytes, JetStreamStorageError } from "./jetstream-room.ts";
export type { StorageKind } from "./jetstream-room.ts";
export { isCasConflict, isNoLeader, KvClaims, openKvWithTimeout } from "./kv-claim.ts";
export type { KvClaimOptions } from "./kv-claim.ts";
export { cameraSpecOf, connectNats, isTransientNatsError, natsErrorKind, retryTransient, toCamfleetError } from "./nats.ts";
export type { ConnectOptions, NatsConnection, RetryTransientOptions } from "./nats.ts";
export { NatsServerNotFoundError, NatsServerProcess, NatsServerStartError } from "./nats-server.ts";
export type { NatsClusterOptions, NatsServerExit, NatsServerOptions, NatsServerPorts } from "./nats-server.ts";
