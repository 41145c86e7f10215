import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { cameraSpecOf, toCamfleetError, type Config, type Logger } from "../runtime/index.ts";
import { CamfleetError, kvKeys, type CameraSpec } from "../subjects/index.ts";
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

export class GatewayCore {
  readonly config: Config;
  readonly gatewayId: string;
  /** Public base URL: in Location headers, redirects and the relay directory. */
  publicUrl: string;
  readonly relay: Relay;
  readonly directory: RelayDirectory;
  readonly reporter: ViewerReporter;
  readonly #cameras: KV;
  readonly #log: Logger;

  constructor(options: GatewayCoreOptions) {
    this.config = options.config;
    this.gatewayId = options.config.nodeId;
    this.publicUrl = options.publicUrl ?? "";
    this.#cameras = options.cameras;
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
  async open(kind: SessionKind, camera: string, offer: string, route: "sdp" | "offer" = "sdp"): Promise<OpenOutcome> {
    try {
      return await this.#open(kind, camera, offer, route);
    } catch (err) {
      throw toCamfleetError(err);
    }
  }

  async #open(kind: SessionKind, camera: string, offer: string, route: "sdp" | "offer"): Promise<OpenOutcome> {
    const spec = await this.cameraSpec(camera);
    if (kind === "whep" && spec.publish === "off") throw new CamfleetError("CONFLICT", `camera ${camera} has publish "off": nothing to watch`);
    if (kind === "whep" && !spec.enabled) throw new CamfleetError("CONFLICT", `camera ${camera} is stopped; start it to watch it`);
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

  /** After any change: report the viewer count, and give the relay claim up when nothing is left here. */
  #settle(camera: string): void {
    this.reporter.set(camera, this.relay.viewerCount(camera));
    if (!this.relay.hasPublisher(camera) && this.relay.viewerCount(camera) === 0) void this.directory.release(camera);
  }

  async stop(): Promise<void> {
    await this.relay.close();
    await this.reporter.stop(true);
    await this.directory.stop();
  }
}
