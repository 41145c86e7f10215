/**
 * Log messages that operators grep for and tests wait on. They are part of
 * the runtime's contract: change one here and every reader follows, instead
 * of a test timing out on a line that is no longer written.
 */
export const LOG_MESSAGES = {
  nodeReady: "node ready",
  nodeStopped: "node stopped",
  servingOps: "serving /metrics, /healthz, /readyz",
  claimedCamera: "claimed camera",
  releasedCamera: "released camera",
  /** Warn: a claim failed for another reason than a lost race or NATS being briefly unable to take it. */
  claimFailed: "claim failed",
  leaseLost: "lease lost; stopped actor (self-fencing)",
  /** Info: the first of a run of failing lease renewals (`error` says what kind: no-responders, timeout, disconnected, …). */
  leaseRenewalsFailing: "lease renewals failing",
  /** Info: renewals work again; `failedForMs` and `errors` (count by kind) sum the run up. */
  leaseRenewalsWork: "lease renewals work again",
  /** Info: the leases stream's last revision of a held key is older than the one this node wrote last (the stream lost writes in a leader change); renewing from it. */
  leaseRevisionWentBack: "lease revision went back; renewing from the stream's own",
  handingOver: "handing cameras over to even the load",
  drained: "drained",
  connectedToNats: "connected to NATS",
  reconnectedToNats: "reconnected to NATS",
  disconnectedFromNats: "disconnected from NATS; reconnecting",
  natsNotReachableYet: "NATS not reachable yet; retrying until it is",
  embeddedNatsReady: "embedded nats-server ready",
  gatewayReady: "gateway ready",
  /** `camfleet up` runs: its fields say where (dashboard, whep, whip, nats, metrics, detector, demo). */
  upReady: "camfleet up ready",
  detectorListening: "reference detector listening",
  /** Warn: an existing stream differs from this process's configuration; it is left as it is. */
  streamSettingsDiffer: "stream settings differ from this process's configuration; left as they are (camfleet streams apply changes them)",
} as const;

export type LogMessage = (typeof LOG_MESSAGES)[keyof typeof LOG_MESSAGES];
