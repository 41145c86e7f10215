import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { cameraSpecOf, toCamfleetError, type Config, type Logger } from "../runtime/index.ts";
import { CamfleetError, kvKeys, LeaseSchema, type CameraSpec, type Lease } from "../subjects/index.ts";
import { Relay, type SessionKind } from "./relay.ts";
import { RelayDirectory } from "./relay-directory.ts";
import { ViewerReporter } from "./viewer-reporter.ts";

/**
 * What the gateway's routes share: the relay, where cameras' relays live,
 * viewer reporting, and camera lookups. Reaches actors over NATS only.
 */
export interface GatewayCoreOptions {
  config: Config;
  logger: Logger;
  nc: NatsConnection;
  cameras: KV;
  /** camfleet_leases: who owns a camera, so only its owner may publish it. */
  leases: KV;
  relays: KV;
  /** This gateway's public base URL (no trailing slash); may be set later, before the first request. */
  publicUrl?: string;
  loopbackOnly?: boolean;
  /** Relay timing overrides (tests). */
  relayTiming?: { rtcpTimeoutMs?: number; connectTimeoutMs?: number; publisherIdleTimeoutMs?: number };
  /** Viewer-count TTL at the owner, ms (tests). */
  viewerTtlMs?: number;
  /** Relay claim TTL, ms (tests). */
  relayTtlMs?: number;
  /** Each forwarded packet's time through the relay, ms (metrics). */
  onForwarded?: (ms: number) => void;
}

export type OpenOutcome = { redirect: string } | { answer: string; location: string };

/** Who a WHIP publish says it comes from (PUBLISHER_NODE_HEADER, PUBLISHER_EPOCH_HEADER); empty for an external source. */
export interface PublisherIdentity {
  node?: string;
  epoch?: number;
}

export class GatewayCore {
  readonly config: Config;
  readonly gatewayId: string;
  /** Public base URL: in Location headers, redirects and the relay directory. */
  publicUrl: string;
  readonly relay: Relay;
  readonly directory: RelayDirectory;
  readonly reporter: ViewerReporter;
  readonly #cameras: KV;
  readonly #leases: KV;
  readonly #log: Logger;

  constructor(options: GatewayCoreOptions) {
    this.config = options.config;
    this.gatewayId = options.config.nodeId;
    this.publicUrl = options.publicUrl ?? "";
    this.#cameras = options.cameras;
    this.#leases = options.leases;
    this.#log = options.logger;
    this.relay = new Relay({
      logger: options.logger,
      loopbackOnly: options.loopbackOnly ?? false,
      maxViewersPerCamera: options.config.relayMaxViewersPerCamera,
      maxViewers: options.config.relayMaxViewers,
      ...options.relayTiming,
      onChange: (camera) => this.#settle(camera),
      ...(options.onForwarded !== undefined ? { onForwarded: options.onForwarded } : {}),
    });
    this.directory = new RelayDirectory({
      kv: options.relays,
      gateway: this.gatewayId,
      url: () => this.publicUrl,
      logger: options.logger,
      ...(options.relayTtlMs !== undefined ? { ttlMs: options.relayTtlMs } : {}),
      describe: (camera) => ({ publishing: this.relay.hasPublisher(camera), viewers: this.relay.viewerCount(camera) }),
    });
    this.reporter = new ViewerReporter({
      nc: options.nc,
      gateway: this.gatewayId,
      logger: options.logger,
      ...(options.viewerTtlMs !== undefined ? { ttlMs: options.viewerTtlMs } : {}),
    });
  }

  /** The camera's spec from camfleet_cameras; NOT_FOUND if there is none. */
  async cameraSpec(camera: string): Promise<CameraSpec> {
    const spec = cameraSpecOf(await this.#cameras.get(kvKeys.camera(camera)));
    if (spec === undefined) throw new CamfleetError("NOT_FOUND", `no camera ${camera}`);
    return spec;
  }

  /** A WHIP publisher or WHEP viewer for a camera: here, or a redirect to the gateway that holds its relay. */
  async open(kind: SessionKind, camera: string, offer: string, route: "sdp" | "offer" = "sdp", publisher: PublisherIdentity = {}): Promise<OpenOutcome> {
    try {
      return await this.#open(kind, camera, offer, route, publisher);
    } catch (err) {
      throw toCamfleetError(err);
    }
  }

  async #open(kind: SessionKind, camera: string, offer: string, route: "sdp" | "offer", publisher: PublisherIdentity): Promise<OpenOutcome> {
    const spec = await this.cameraSpec(camera);
    if (kind === "whip") await this.#checkPublisher(camera, publisher);
    // A live publisher (an external WHIP source: a browser, OBS, a phone) has viewers whatever the spec says.
    if (kind === "whep" && (spec.publish === "off" || !spec.enabled) && !(await this.#onAir(camera))) {
      throw new CamfleetError("CONFLICT", spec.publish === "off" ? `camera ${camera} has publish "off": nothing to watch` : `camera ${camera} is stopped; start it to watch it`);
    }
    const placement = await this.directory.acquire(camera);
    if (!placement.local) {
      const path = route === "offer" ? `/cameras/${camera}/webrtc/offer` : `/${kind}/${camera}`;
      this.#log.debug({ camera, kind, relay: placement.relay.gateway }, "redirecting to the gateway that holds the camera's relay");
      return { redirect: `${placement.relay.url}${path}` };
    }
    try {
      const { sessionId, answer } = kind === "whip" ? await this.relay.publish(camera, offer) : await this.relay.view(camera, offer);
      return { answer, location: `${this.publicUrl}/${kind}/${camera}/${sessionId}` };
    } catch (err) {
      this.#settle(camera);
      throw err;
    }
  }

  /**
   * Only a camera's owner publishes it: a node's WHIP POST names itself and
   * its lease epoch, which must be the lease's now (an older epoch is a node
   * that lost the camera and does not know yet: it is never on the air beside
   * the new owner). A publisher that names no node is an external source,
   * let through only while no node holds the camera.
   */
  async #checkPublisher(camera: string, publisher: PublisherIdentity): Promise<void> {
    const lease = await this.lease(camera);
    if (lease === undefined) return;
    if (publisher.node === undefined) {
      throw new CamfleetError("CONFLICT", `camera ${camera} is run by node ${lease.node}: only its owner may publish it (an external WHIP source may publish a camera no node runs)`);
    }
    if (publisher.node !== lease.node || publisher.epoch !== lease.epoch) {
      const stale = publisher.epoch !== undefined && publisher.epoch < lease.epoch;
      throw new CamfleetError(
        "CONFLICT",
        `camera ${camera} is run by node ${lease.node} at epoch ${lease.epoch}; ${publisher.node} (epoch ${publisher.epoch ?? "none"}) ${stale ? "holds an older lease" : "is not its owner"} and may not publish it`,
      );
    }
  }

  /** The camera's lease in camfleet_leases, if one is held (or expired and not yet taken over). */
  async lease(camera: string): Promise<Lease | undefined> {
    const entry = await this.#leases.get(kvKeys.lease(camera));
    if (entry === null || entry.operation !== "PUT") return undefined;
    const parsed = LeaseSchema.safeParse(entry.json());
    return parsed.success ? parsed.data : undefined;
  }

  /** A connected publisher of the camera, here or at the gateway that holds its relay. */
  async #onAir(camera: string): Promise<boolean> {
    if (this.relay.isLive(camera)) return true;
    return (await this.directory.holder(camera))?.publishing === true;
  }

  /** After any change: report the viewer count, and give the relay claim up when nothing is left here. */
  #settle(camera: string): void {
    // Connected viewers only: an offer that never connects must not keep an on-demand camera publishing.
    this.reporter.set(camera, this.relay.connectedViewerCount(camera));
    if (!this.relay.hasPublisher(camera) && this.relay.viewerCount(camera) === 0) void this.directory.release(camera);
  }

  async stop(): Promise<void> {
    await this.relay.close();
    await this.reporter.stop(true);
    await this.directory.stop();
  }
}
