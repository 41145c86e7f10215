import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * One prom-client registry per node process; every part of the code adds its
 * metrics to it (the camera actor adds the per-camera ones). Created here and
 * injected, never global, so several nodes can live in one test process.
 */
/**
 * One instance per registry, made on first use: metrics register once per
 * registry however many actors ask for them (prom-client refuses a name twice).
 */
export function perRegistry<T>(create: (registry: Registry) => T): (registry: Registry) => T {
  const made = new WeakMap<Registry, T>();
  return (registry) => {
    let m = made.get(registry);
    if (m === undefined) {
      m = create(registry);
      made.set(registry, m);
    }
    return m;
  };
}

export function createRegistry(labels: { node: string }, options: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: "camfleet_process_" });
  return registry;
}

/** Node-level metrics of the contract (docs/contract.md). */
export class NodeMetrics {
  readonly camerasOwned: Gauge;
  readonly capacity: Gauge;
  readonly leaseRenewFailures: Counter;
  readonly natsReconnects: Counter;
  readonly natsConnected: Gauge;
  readonly controlLatency: Histogram<"op" | "outcome">;
  readonly snapshotRequests: Counter<"outcome">;

  constructor(readonly registry: Registry) {
    this.camerasOwned = new Gauge({ name: "camfleet_node_cameras_owned", help: "Cameras whose lease this node holds", registers: [registry] });
    this.capacity = new Gauge({ name: "camfleet_node_capacity", help: "Cameras this node may run at most (MAX_CAMERAS)", registers: [registry] });
    this.leaseRenewFailures = new Counter({
      name: "camfleet_lease_renew_failures_total",
      help: "Lease renewals that failed (lost CAS race, timeout, NATS away)",
      registers: [registry],
    });
    this.natsReconnects = new Counter({ name: "camfleet_nats_reconnects_total", help: "Reconnections to NATS after a lost connection", registers: [registry] });
    this.natsConnected = new Gauge({ name: "camfleet_nats_connected", help: "1 while connected to NATS, else 0", registers: [registry] });
    this.controlLatency = new Histogram({
      name: "camfleet_control_request_duration_seconds",
      help: "Time to serve one control request, from receipt to reply",
      labelNames: ["op", "outcome"],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    });
    this.snapshotRequests = new Counter({
      name: "camfleet_snapshot_requests_total",
      help: "camera.<id>.snapshot requests this node answered, by outcome (ok or the error code)",
      labelNames: ["outcome"],
      registers: [registry],
    });
  }
}
