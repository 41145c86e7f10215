/** The node: placement (the pure reconcile round and its hashing), leases, supervision, the control server, the cluster view, the event publisher, the ops port. */
export { ClusterView } from "./cluster-view.ts";
export { respondSafely } from "./control-server.ts";
export { BufferedPublisher } from "./event-publisher.ts";
export type { BufferedPublisherOptions, PublishOutcome } from "./event-publisher.ts";
export { KindRegistry, runtimeError } from "./kinds.ts";
export type { Actor, ActorContext, ActorKind, DetectionOutcome, DetectionReport, StatusReport, StopReason, ViewerReport } from "./kinds.ts";
export { LeaseKeeper, leaseTiming } from "./leases.ts";
export type { LeaseLossReason, OwnedLease } from "./leases.ts";
export { FleetNode } from "./node.ts";
export type { FleetNodeOptions } from "./node.ts";
export { ageOf, DEFAULT_PLACEMENT, initialMemory, isExpired, reconcile } from "./reconcile.ts";
export type { ClusterSnapshot, PlacementMemory, PlacementTuning, ReconcileDecision, ReconcileInput, ReleaseReason, SelfState } from "./reconcile.ts";
export { startOpsServer } from "./ops-http.ts";
export type { OpsServer, OpsServerOptions } from "./ops-http.ts";
export { fairShare, handoverCount, hashUnit, rankCandidates, rendezvousScore } from "./placement.ts";
export type { NodeLoad } from "./placement.ts";
export { ActorSlot, DEFAULT_BACKOFF } from "./supervisor.ts";
export type { BackoffPolicy } from "./supervisor.ts";
