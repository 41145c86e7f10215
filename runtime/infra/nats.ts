import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import { jserrors } from "@nats-io/jetstream/internal";
import {
  AuthorizationError,
  ClosedConnectionError,
  connect,
  ConnectionError,
  DrainingConnectionError,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
  UserAuthenticationExpiredError,
  type NatsConnection,
} from "@nats-io/transport-node";
import type { KvEntry } from "@nats-io/kv";
import { CameraSpecSchema, CamfleetError, ensureCamfleetError, redact, type CameraSpec } from "../../subjects/index.ts";
import { backoffDelay, equalJitter, type Backoff } from "../backoff.ts";
import { realClock, sleep, type Clock } from "../clock.ts";
import { LOG_MESSAGES } from "../log-messages.ts";
import type { Logger } from "../logger.ts";
import type { NatsAuth } from "../nats-auth.ts";
import type { NodeMetrics } from "../metrics.ts";

export type { NatsConnection } from "@nats-io/transport-node";

export interface ConnectOptions {
  /** Server URLs without credentials (Config.natsServers): `nats://host:port`, `tls://host:port` or `host:port`. */
  servers: string[];
  /** Credentials and TLS (Config.natsAuth). Default none: the embedded server, or a server without auth. */
  auth?: NatsAuth;
  /** Prefix of reply inboxes, for users allowed to subscribe only there (a NATS context's `inbox_prefix`). Default `_INBOX`. */
  inboxPrefix?: string;
  /** Connection name the server shows in its monitoring (e.g. `camfleet-node-<id>`). */
  name: string;
  logger: Logger;
  metrics?: NodeMetrics;
  /** Shortest reconnect delay, ms; delays grow to a quarter of the outage so far, up to `maxReconnectDelayMs`. Default 250. */
  reconnectDelayMs?: number;
  /** Longest reconnect delay, ms. Default 5000. */
  maxReconnectDelayMs?: number;
  /** Timeout of one connect attempt, ms. Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Keep trying the first connect until it works (a node started before its
   * cluster), instead of failing at once (a command-line client). Default false.
   */
  retryFirstConnect?: boolean;
  /** Stops the first-connect retries (e.g. on SIGTERM during start-up). */
  signal?: AbortSignal;
  /**
   * Capture a stack trace at every request so a timeout says where it was
   * made. Default false: the client builds two Error objects per request for
   * it, which was ~30 % of a node's CPU when publishing detections
   * (bench/detections.ts, nats.js 3.4); errors keep their messages.
   */
  asyncTraces?: boolean;
  /** Use only `servers`, never servers the cluster advertises (the route witness keeps off one server). Default false. */
  ignoreClusterUpdates?: boolean;
}

/**
 * Connects to NATS and keeps reconnecting for ever, with exponential backoff
 * and jitter. Each change of connection state is logged once (not once per
 * failed attempt) and counted in the node metrics.
 *
 * The first connect, with `retryFirstConnect`, is retried only while the
 * server is not there yet (see isUnreachable: refused, reset, timed out, no
 * route, name not resolved). A server that answers and refuses is told at
 * once, never retried: wrong credentials are CamfleetError UNAUTHENTICATED
 * ("authorization violation"), and a TLS failure (no TLS on a server a
 * `tls://` URL or NATS_CA asked TLS of, a certificate that does not verify, a
 * client certificate the server refuses) is UNAVAILABLE naming the cause.
 * After the first connect the client's own rule holds: it gives up
 * reconnecting after the same authorization error twice in a row (the
 * connection then closes), and retries everything else for ever.
 */
export async function connectNats(options: ConnectOptions): Promise<NatsConnection> {
  const policy: Backoff = { initialMs: options.reconnectDelayMs ?? 250, maxMs: options.maxReconnectDelayMs ?? 5000 };
  const log = options.logger;
  // The client calls the delay handler on every pass of its dial loop, even
  // passes that only wait, so counting calls would reach the cap within
  // moments. The delay grows with how long the outage has lasted instead:
  // the first retries of a blip are quick, a long outage backs off.
  let outageStart: number | undefined;
  const backoff = () => {
    const now = realClock.now();
    outageStart ??= now;
    // Equal jitter spreads a fleet's reconnects after a server restart.
    return equalJitter(Math.min(policy.maxMs, Math.max(policy.initialMs, (now - outageStart) / 4)));
  };
  const open = () =>
    connect({
      servers: options.servers,
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectJitter: 0, // jitter comes from backoff()
      reconnectDelayHandler: backoff,
      timeout: options.connectTimeoutMs ?? 5000,
      pingInterval: 10_000,
      maxPingOut: 2,
      noAsyncTraces: !(options.asyncTraces ?? false),
      ignoreClusterUpdates: options.ignoreClusterUpdates ?? false,
      ...(options.auth?.authenticator !== undefined ? { authenticator: options.auth.authenticator } : {}),
      ...(options.auth?.tls !== undefined ? { tls: options.auth.tls } : {}),
      ...(options.inboxPrefix !== undefined ? { inboxPrefix: options.inboxPrefix } : {}),
    });

  let nc: NatsConnection | undefined;
  let warned = false;
  while (nc === undefined) {
    try {
      nc = await open();
    } catch (err) {
      const refused = refusedConnectError(err, options.servers);
      if (refused !== undefined) throw refused;
      if (!(options.retryFirstConnect ?? false) || options.signal?.aborted) throw err;
      if (!warned) log.warn({ servers: options.servers.map(redact), err }, LOG_MESSAGES.natsNotReachableYet);
      warned = true;
      await abortableDelay(backoff(), options.signal);
    }
  }
  outageStart = undefined;
  options.metrics?.natsConnected.set(1);
  log.info({ server: redact(nc.getServer()) }, LOG_MESSAGES.connectedToNats);
  void watchStatus(nc, log, options.metrics, () => {
    outageStart = undefined;
  });
  return nc;
}

/** System error codes of "nobody is listening there yet": worth retrying while a cluster starts. */
const UNREACHABLE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENOTFOUND", "EAI_AGAIN", "EPIPE"]);

/** True when the first connect failed because no server answered (yet), as opposed to a server that answered and refused. */
function isUnreachable(err: unknown): boolean {
  if (err instanceof TimeoutError) return true;
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && UNREACHABLE_CODES.has(code)) return true;
  }
  return false;
}

/**
 * A first-connect failure that no retry can fix, as a CamfleetError naming
 * the servers (credentials never appear: the URLs carry none); undefined for
 * "not reachable yet".
 */
function refusedConnectError(err: unknown, servers: readonly string[]): CamfleetError | undefined {
  const where = servers.map(redact).join(", ");
  if (err instanceof AuthorizationError || err instanceof UserAuthenticationExpiredError) {
    return new CamfleetError("UNAUTHENTICATED", `NATS at ${where} refused the credentials (${err.message.replace(/^'|'$/g, "")}); check NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY or NATS_CREDS`, { cause: err });
  }
  if (isUnreachable(err)) return undefined;
  const why = err instanceof Error ? err.message : String(err);
  return new CamfleetError("UNAVAILABLE", `cannot connect to NATS at ${where}: ${why}`, { cause: err });
}

async function watchStatus(nc: NatsConnection, log: Logger, metrics: NodeMetrics | undefined, onReconnect: () => void): Promise<void> {
  let reconnecting = false;
  for await (const s of nc.status()) {
    switch (s.type) {
      case "disconnect":
        metrics?.natsConnected.set(0);
        log.warn({ server: redact(s.server) }, LOG_MESSAGES.disconnectedFromNats);
        break;
      case "reconnecting":
        // Fires once per attempt: log only the first of an outage.
        if (!reconnecting) log.debug("reconnecting to NATS");
        reconnecting = true;
        break;
      case "reconnect":
        reconnecting = false;
        onReconnect();
        metrics?.natsConnected.set(1);
        metrics?.natsReconnects.inc();
        log.info({ server: redact(s.server) }, LOG_MESSAGES.reconnectedToNats);
        break;
      case "ldm":
        log.warn({ server: redact(s.server) }, "NATS server entering lame-duck mode; will move to another");
        break;
      case "error":
        if (s.error instanceof PermissionViolationError) {
          // The server only reports it, asynchronously: a JetStream or KV call on that subject then times out.
          // Said here with the subject, so a missing permission is not mistaken for a slow cluster.
          log.error({ operation: s.error.operation, subject: s.error.subject }, `NATS permissions violation: this user may not ${s.error.operation === "publish" ? "publish to" : "subscribe to"} ${s.error.subject}`);
        } else {
          log.error({ err: s.error }, "NATS connection error");
        }
        break;
      case "staleConnection":
        log.warn("NATS connection is stale (no PONG); reconnecting");
        break;
      case "slowConsumer":
        log.warn({ subject: s.sub.getSubject(), pending: s.pending }, "slow consumer: messages are piling up");
        break;
      case "close":
        metrics?.natsConnected.set(0);
        log.info("NATS connection closed");
        return;
      default:
        break;
    }
  }
}

// Not the Clock's sleep: realClock's timers are unref'd, and before the first
// connect nothing else may keep the process alive while it waits.
function abortableDelay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * True for failures that say "NATS or JetStream cannot answer right now"
 * (timeouts, no responders during a leader election, a lost connection):
 * worth a retry, and reported to callers as UNAVAILABLE, not as a bug.
 */
export function isTransientNatsError(err: unknown): boolean {
  return (
    err instanceof TimeoutError ||
    err instanceof NoRespondersError ||
    err instanceof ConnectionError ||
    err instanceof ClosedConnectionError ||
    err instanceof DrainingConnectionError ||
    err instanceof RequestError ||
    err instanceof jserrors.JetStreamNotEnabled ||
    (err instanceof JetStreamError && !(err instanceof JetStreamApiError))
  );
}

/**
 * A short name for what went wrong with a NATS request, for logs that count
 * failures by kind: "no-responders" (nobody holds the subject: a JetStream
 * stream without a leader), "timeout", "disconnected", "jetstream <code>"
 * (the server refused), or the error's own name.
 */
export function natsErrorKind(err: unknown): string {
  if (err instanceof NoRespondersError || err instanceof jserrors.JetStreamNotEnabled || (err instanceof RequestError && err.isNoResponders())) return "no-responders";
  if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) return "timeout";
  if (err instanceof ConnectionError || err instanceof ClosedConnectionError || err instanceof DrainingConnectionError) return "disconnected";
  if (err instanceof JetStreamApiError) return `jetstream ${err.code}`;
  return err instanceof Error ? err.name : typeof err;
}

/**
 * The one boundary from "anything thrown" to a camfleet error: CamfleetErrors
 * pass through, NATS's transient failures (no responders, timeouts, a
 * connection that is closed, draining or away, JetStream not answering) are
 * UNAVAILABLE, anything else INTERNAL. `what` names the part that did not
 * answer, e.g. "the cluster".
 */
export function toCamfleetError(err: unknown, what = "the cluster (NATS)"): CamfleetError {
  if (err instanceof CamfleetError) return err;
  if (isTransientNatsError(err)) return new CamfleetError("UNAVAILABLE", `${what} cannot answer right now; retry`, { cause: err });
  return ensureCamfleetError(err);
}

/**
 * A camera's spec from a `camfleet_cameras` entry: undefined for no entry or
 * a delete/purge marker; an unreadable value is INTERNAL (the bucket is
 * written through CameraSpecSchema only, so it means a foreign writer).
 */
export function cameraSpecOf(entry: KvEntry | null): CameraSpec | undefined {
  if (entry === null || entry.operation !== "PUT") return undefined;
  const parsed = CameraSpecSchema.safeParse(entry.json());
  if (!parsed.success) throw new CamfleetError("INTERNAL", `camera ${entry.key} has an unreadable spec: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  return parsed.data;
}

export interface RetryTransientOptions {
  /** Told once, at the first retry. */
  logger?: Logger;
  /** Stops retrying once aborted. */
  signal?: AbortSignal;
  /** Gives up when the next attempt would start later than this after the first, ms. Default: no limit. */
  deadlineMs?: number;
  clock?: Clock;
}

/** 0.25 s doubling to 5 s, no jitter: one caller waiting for its cluster, not a herd. */
const TRANSIENT_RETRY: Backoff = { initialMs: 250, maxMs: 5000, jitter: "none" };

/**
 * Retries work that fails only because NATS or JetStream cannot answer yet
 * (a cluster electing leaders, a busy meta leader, a server restarting), with
 * backoff 0.25 s → 5 s, saying so once. Any other error, an abort, or the
 * deadline ends it with `<what> failed: …` (the original error as cause).
 */
export async function retryTransient<T>(what: string, work: () => Promise<T>, options: RetryTransientOptions = {}): Promise<T> {
  const clock = options.clock ?? realClock;
  const deadline = options.deadlineMs !== undefined ? clock.now() + options.deadlineMs : Number.POSITIVE_INFINITY;
  let warned = false;
  for (let attempt = 1; ; attempt++) {
    const delay = backoffDelay(TRANSIENT_RETRY, attempt);
    try {
      return await work();
    } catch (err) {
      if (!isTransientNatsError(err) || options.signal?.aborted || clock.now() + delay > deadline) {
        throw new Error(`${what} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      if (!warned) options.logger?.warn({ err }, `${what}: JetStream is not answering yet; retrying`);
      warned = true;
      await sleep(clock, delay);
    }
  }
}
