/**
 * The route witness: a second, small NATS connection of this node, kept on a
 * different server of the cluster than the node's main connection, that
 * answers on `camfleet.ctl.node.<id>.witness`. A request from the main
 * connection that gets the witness's answer has crossed a working route
 * between two servers just now. Two servers of three that reach each other
 * are the cluster's majority: that is the lease keeper's outage proof
 * (docs/architecture.md, "Leases and fencing"), and unlike the presence of
 * other nodes it does not depend on where those happen to be connected (after
 * a server dies, every survivor may reconnect to the same one).
 *
 * Only for a node given two servers or more: with one, nothing is witnessed,
 * and the proof falls back on other nodes' presence.
 */
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { subjects } from "../../subjects/index.ts";
import type { Logger } from "../logger.ts";

export interface RouteWitnessOptions {
  node: string;
  /** The node's NATS URLs (Config.natsServers). */
  servers: readonly string[];
  /** Opens a connection to these servers only (no servers learned from the cluster), retrying until it works or `signal` aborts. */
  connect(servers: string[], signal: AbortSignal): Promise<NatsConnection>;
  logger: Logger;
}

/** host:port of a NATS URL (`nats://h:p`, `tls://h:p`, `h:p`), as NatsConnection.getServer() spells it. */
export function hostPort(url: string): string {
  return url.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "").replace(/^.*@/, "");
}

export class RouteWitness {
  #nc?: NatsConnection;
  #sub?: Subscription;
  /** The servers the open witness connection may use (all but the main connection's). */
  #targets: string[] = [];
  #opening?: Promise<void>;
  #closed = false;
  readonly #abort = new AbortController();

  constructor(private readonly options: RouteWitnessOptions) {}

  /** False when there is nothing to witness: a single server. */
  get useful(): boolean {
    return new Set(this.options.servers.map(hostPort)).size >= 2;
  }

  /**
   * Keeps the witness off the main connection's server: opens it on the
   * other servers, and re-opens it whenever the main connection moved onto
   * one the witness may use. Call at start and after every reconnect of the
   * main connection.
   */
  follow(main: NatsConnection): void {
    if (!this.useful || this.#closed || main.isClosed()) return;
    const mainServer = main.getServer();
    // Never empty (useful: two servers or more). A main connection on a server we were not
    // given leaves them all; probe() then ignores an answer from main's own server.
    const others = this.options.servers.filter((u) => hostPort(u) !== mainServer);
    this.#opening = (this.#opening ?? Promise.resolve()).then(() => this.#open(main, others));
  }

  async #open(main: NatsConnection, targets: string[]): Promise<void> {
    if (this.#closed || (this.#nc !== undefined && !this.#nc.isClosed() && sameSet(targets, this.#targets))) return;
    const old = this.#nc;
    this.#nc = undefined;
    await old?.close().catch(() => undefined);
    try {
      const nc = await this.options.connect(targets, this.#abort.signal);
      if (this.#closed) {
        await nc.close();
        return;
      }
      this.#nc = nc;
      this.#targets = targets;
      this.#sub = nc.subscribe(subjects.ctl.nodeWitness(this.options.node), {
        callback: (err, msg) => {
          if (err !== null) return;
          try {
            msg.respond(JSON.stringify({ ok: true, node: this.options.node, server: nc.info?.server_id }));
          } catch (e) {
            this.options.logger.debug({ err: e }, "witness reply failed");
          }
        },
      });
      // Flushed: the subscription is known to its server before the first probe relies on it.
      await nc.flush();
      this.options.logger.debug({ server: nc.getServer(), main: main.getServer() }, "route witness connected");
      void this.#reopenOnDisconnect(nc, main);
    } catch (err) {
      this.options.logger.warn({ err }, "route witness could not connect; lease holds through NATS elections rely on other nodes' presence");
    }
  }

  /**
   * A witness that lost its server is opened afresh on the others at once,
   * instead of left to the client's reconnect loop: in the fault rig that
   * loop kept a witness away for 14 s after its server died while another
   * of its servers was up (not understood; a fresh connect reaches it).
   */
  async #reopenOnDisconnect(nc: NatsConnection, main: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type !== "disconnect") continue;
      if (this.#nc === nc && !this.#closed) {
        this.options.logger.debug({ server: s.server }, "route witness lost its server; reconnecting");
        const targets = this.#targets;
        this.#targets = [];
        this.#opening = (this.#opening ?? Promise.resolve()).then(() => this.#open(main, targets));
      }
      return;
    }
  }

  /**
   * The server id of the witness's server, when a request from `main` just
   * reached it and it is another server than main's; undefined otherwise.
   */
  async probe(main: NatsConnection, timeoutMs: number): Promise<string | undefined> {
    if (this.#nc === undefined || this.#nc.isClosed() || main.isClosed()) return undefined;
    try {
      const reply = await main.request(subjects.ctl.nodeWitness(this.options.node), "", { timeout: timeoutMs });
      const server = reply.json<{ server?: unknown }>().server;
      return typeof server === "string" && server !== main.info?.server_id ? server : undefined;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    await this.#opening?.catch(() => undefined);
    this.#sub?.unsubscribe();
    await this.#nc?.close().catch(() => undefined);
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
