// What every command that talks to NATS shares: the --server/--creds/--context/
// --timeout flags, the connection, and how failures end the process.

import type { Command } from "commander";
import { resolveNats, type NatsFlags } from "./nats-context.ts";
import { CamfleetError, redact } from "../subjects/index.ts";
import {
  ConfigError,
  connectNats,
  ControlClient,
  JetStreamStorageError,
  loadConfig,
  natsEnvSettings,
  silentLogger,
  toCamfleetError,
  type Config,
  type NatsConnection,
  type Role,
} from "../runtime/index.ts";

/**
 * Exit codes of every command: 0 ok, 1 failure, 2 bad usage, 78 bad
 * configuration (EX_CONFIG). `--wait` adds 3 (the camera was in ERROR during the wait) and 4
 * (it did not reach STREAMING within --wait-timeout, and reported no error).
 */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_CAMERA_ERROR = 3;
export const EXIT_WAIT_TIMEOUT = 4;
export const EXIT_CONFIG = 78;

/** The flags of every command that talks to NATS (the NATS CLI's names). */
export interface ClientFlags extends NatsFlags {
  timeout?: string;
}

/** Adds --server, --creds, --context and --timeout; precedence flag > environment > context (cli/nats-context.ts). */
export function natsFlags(cmd: Command): Command {
  return cmd
    .option("-s, --server <urls>", "NATS server URLs, comma-separated (default NATS_URL, else the context's, else nats://127.0.0.1:4222)")
    .option("--creds <file>", "NATS user credentials file (default NATS_CREDS, else the context's)")
    .option("--context <name>", "NATS CLI context to use (~/.config/nats/context/<name>.json; default the selected one when neither --server nor NATS_URL is given)")
    .option("--timeout <duration>", "how long to wait for NATS to connect and to answer, e.g. 500ms, 5s (default: connect 3s, answers 5s)");
}

/** A duration like the NATS CLI's (500ms, 5s, 1m), or plain seconds, as ms; a bad one exits 2 naming the flag. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  const ms = m === null ? NaN : Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "m" ? 60_000 : 1000);
  if (!Number.isFinite(ms) || ms < 1 || ms > 3_600_000) {
    process.stderr.write(`camfleet: ${flag} must be a duration from 1ms to 1h, e.g. 500ms, 5s or 1m (got ${JSON.stringify(text)})\n`);
    process.exit(EXIT_USAGE);
  }
  return ms;
}

/** The JetStreamStorageError an error is, or was caused by (set-up steps wrap what they throw). */
export function storageErrorIn(err: unknown): JetStreamStorageError | undefined {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof JetStreamStorageError) return e;
  return undefined;
}

export function loadConfigOrExit(role: Role): Config {
  try {
    return loadConfig(process.env, role);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`camfleet: invalid configuration: ${problem}\n`);
    process.exit(EXIT_CONFIG);
  }
}

/** Runs a client command against the cluster; errors become one line on stderr and exit 1. */
export async function withClient(flags: ClientFlags, work: (client: ControlClient, nc: NatsConnection) => Promise<void>): Promise<void> {
  await withNats(flags, (nc, opts) => work(new ControlClient(nc, opts), nc));
}

export async function withNats(flags: ClientFlags, work: (nc: NatsConnection, opts: { timeoutMs?: number; inboxPrefix?: string }) => Promise<void>): Promise<void> {
  let config: Config;
  let resolved: ReturnType<typeof resolveNats>;
  try {
    resolved = resolveNats(flags, process.env, natsEnvSettings(process.env));
    config = loadConfig(process.env, "client", resolved);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`camfleet: invalid configuration: ${problem}\n`);
    process.exit(EXIT_CONFIG);
  }
  for (const note of resolved.notes) process.stderr.write(`camfleet: ${note}\n`);
  const timeoutMs = flags.timeout !== undefined ? parseDuration("--timeout", flags.timeout) : undefined;
  const auth = resolved.tlsFirst === true ? { ...config.natsAuth, tls: { ...config.natsAuth.tls, handshakeFirst: true } } : config.natsAuth;
  const servers = config.natsServers ?? [`nats://127.0.0.1:${config.embeddedNatsPort}`];
  let nc: NatsConnection;
  try {
    // The same connection a node makes, but failing at once: a command should say so, not wait for a server.
    nc = await connectNats({
      servers,
      auth,
      name: "camfleet-cli",
      logger: silentLogger(),
      connectTimeoutMs: timeoutMs ?? 3000,
      ...(resolved.inboxPrefix !== undefined ? { inboxPrefix: resolved.inboxPrefix } : {}),
    });
  } catch (err) {
    if (err instanceof CamfleetError) {
      // Refused (credentials, TLS): say what the server said; no hint to start a server that is there.
      process.stderr.write(`camfleet: ${err.code}: ${err.message}\n`);
    } else {
      process.stderr.write(`camfleet: cannot reach NATS at ${servers.map(redact).join(", ")} (${err instanceof Error ? err.message : String(err)}); set NATS_URL, or start camfleet with \`camfleet up\`\n`);
    }
    process.exit(EXIT_FAILURE);
  }
  try {
    await work(nc, { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(resolved.inboxPrefix !== undefined ? { inboxPrefix: resolved.inboxPrefix } : {}) });
  } catch (err) {
    const storage = storageErrorIn(err);
    if (storage !== undefined) {
      process.stderr.write(`camfleet: ${storage.message}\n`);
      process.exitCode = EXIT_CONFIG;
      return;
    }
    const e = toCamfleetError(err);
    process.stderr.write(`camfleet: ${e.code}: ${e.message}\n`);
    process.exitCode = EXIT_FAILURE;
  } finally {
    await nc.close();
  }
}
