// Where a camfleet command finds its NATS servers and credentials: its flags
// (--server, --creds, --context), the NATS_* variables, and the NATS CLI's
// context files, so `nats context select prod` users need nothing new.
//
// Context files are the NATS CLI's (ADR-21 of the NATS architecture docs):
//   $XDG_CONFIG_HOME/nats/context/<name>.json (default ~/.config/nats/…), and
//   $XDG_CONFIG_HOME/nats/context.txt, the name of the selected context.
//
// Precedence, highest first: flag > environment > context.
//   - Servers: --server, else NATS_URL, else the context's `url`, else the
//     embedded server's nats://127.0.0.1:CAMFLEET_NATS_PORT.
//   - Credentials are taken as a whole from the highest of the three that has
//     any (user/password, token, nkey, creds, or credentials inside a URL):
//     `--creds x` replaces the context's user and password rather than
//     mixing with them. Two methods within one of them is an error.
//   - TLS files (ca, cert, key) one by one: NATS_CA over the context's `ca`.
//   - The selected context (context.txt) is read only when neither --context,
//     --server nor NATS_URL is given: a NATS_URL set for camfleet is never
//     mixed with the credentials of whatever context `nats` last selected.
//     (The nats CLI itself always loads the selected context and lets flags
//     and variables override field by field.)

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { ConfigError, splitNatsUrls, type NatsAuthSettings, type NatsOverride } from "../runtime/index.ts";

export interface NatsFlags {
  server?: string;
  creds?: string;
  context?: string;
}

/** The fields of a NATS CLI context that camfleet uses. All optional; the CLI writes empty strings for unset ones. */
interface ContextFile {
  url?: string;
  user?: string;
  password?: string;
  token?: string;
  creds?: string;
  nkey?: string;
  cert?: string;
  key?: string;
  ca?: string;
  tls_first?: boolean;
  inbox_prefix?: string;
}

/** Context fields camfleet does not implement: said once on stderr when set, so nobody wonders why they have no effect. */
const IGNORED_FIELDS = ["nsc", "user_jwt", "jetstream_domain", "jetstream_api_prefix", "jetstream_event_prefix", "socks_proxy", "windows_cert_store"];

export interface ResolvedNats extends NatsOverride {
  /** The context used, if any, for messages. */
  context?: string;
  /** Context `tls_first`: TLS before the server's INFO (the server must have handshake_first). */
  tlsFirst?: boolean;
  /** Context `inbox_prefix`: reply subjects for accounts allowed only that prefix. */
  inboxPrefix?: string;
  /** Things worth telling the user (ignored context fields). */
  notes: string[];
}

/** The NATS CLI's configuration folder. */
export function natsConfigDir(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== "" ? env.XDG_CONFIG_HOME : join(homedir(), ".config");
  return join(base, "nats");
}

/**
 * The servers and credential settings a command uses, from its flags, the
 * environment and a NATS CLI context (precedence above). Throws ConfigError
 * naming the flag, variable or context field that is wrong.
 */
export function resolveNats(flags: NatsFlags, env: NodeJS.ProcessEnv, envLayer: NatsOverride): ResolvedNats {
  const notes: string[] = [];
  const envHasServers = env.NATS_URL !== undefined;
  const name = flags.context ?? (flags.server === undefined && !envHasServers ? selectedContext(env) : undefined);
  const ctx = name !== undefined ? readContext(name, env, notes) : undefined;
  const label = (field: string) => `context "${name}" ${field}`;

  // Flag layer.
  let flagServers: ReturnType<typeof splitNatsUrls> | undefined;
  if (flags.server !== undefined) {
    flagServers = splitNatsUrls(serverList(flags.server, "--server"), "--server");
  }
  const flagAuth: NatsAuthSettings = {
    ...userinfo(flagServers, "--server"),
    ...(flags.creds !== undefined ? { creds: { path: expandHome(flags.creds), from: "--creds" } } : {}),
  };

  // Context layer.
  let ctxServers: ReturnType<typeof splitNatsUrls> | undefined;
  const ctxAuth: NatsAuthSettings = {};
  if (ctx !== undefined) {
    if (nonEmpty(ctx.url)) ctxServers = splitNatsUrls(serverList(ctx.url, label("url")), label("url"));
    Object.assign(ctxAuth, userinfo(ctxServers, label("url")));
    if (nonEmpty(ctx.user)) ctxAuth.user = { value: ctx.user, from: label("user") };
    if (nonEmpty(ctx.password)) ctxAuth.password = { value: ctx.password, from: label("password") };
    if (nonEmpty(ctx.token)) ctxAuth.token = { value: ctx.token, from: label("token") };
    if (nonEmpty(ctx.creds)) ctxAuth.creds = { path: expandHome(ctx.creds), from: label("creds") };
    if (nonEmpty(ctx.nkey)) ctxAuth.nkey = { path: expandHome(ctx.nkey), from: label("nkey") };
  }

  const envAuth = pick(envLayer.settings, ["user", "password", "token", "nkey", "creds"]);
  const auth = [flagAuth, envAuth, ctxAuth].find((layer) => Object.keys(layer).length > 0) ?? {};
  const servers = flagServers?.servers ?? envLayer.servers ?? ctxServers?.servers;
  const tlsRequired = flagServers !== undefined ? flagServers.tls : envLayer.servers !== undefined ? envLayer.settings.tlsRequired === true : ctxServers?.tls === true;
  const tlsFile = (key: "ca" | "cert" | "key") =>
    envLayer.settings[key] ?? (ctx !== undefined && nonEmpty(ctx[key]) ? { path: expandHome(ctx[key]), from: label(key) } : undefined);
  const tls = Object.fromEntries((["ca", "cert", "key"] as const).map((k) => [k, tlsFile(k)]).filter(([, v]) => v !== undefined));

  return {
    ...(servers !== undefined ? { servers } : {}),
    settings: { ...auth, ...tls, ...(tlsRequired ? { tlsRequired: true } : {}) },
    ...(name !== undefined ? { context: name } : {}),
    ...(ctx?.tls_first === true ? { tlsFirst: true } : {}),
    ...(nonEmpty(ctx?.inbox_prefix) ? { inboxPrefix: ctx.inbox_prefix } : {}),
    notes,
  };
}

/** Server URLs of a flag or a context field, checked as NATS_URL is: `nats://`/`tls://` URLs or bare host:port. */
function serverList(text: string, from: string): string[] {
  const list = text.split(",").map((u) => u.trim()).filter((u) => u !== "");
  const ok = (u: string) => /^[A-Za-z0-9.-]+:\d{1,5}$/.test(u) || (/^(nats|tls):\/\//i.test(u) && URL.canParse(u) && new URL(u).hostname !== "");
  // The message never repeats the value: it may hold a password.
  if (list.length === 0 || !list.every(ok)) throw new ConfigError([`${from} must be a comma-separated list of nats://host:port or tls://host:port URLs`]);
  return list;
}

function userinfo(split: ReturnType<typeof splitNatsUrls> | undefined, from: string): NatsAuthSettings {
  if (split === undefined) return {};
  return {
    ...(split.user !== undefined ? { user: { value: split.user, from } } : {}),
    ...(split.password !== undefined ? { password: { value: split.password, from } } : {}),
    ...(split.token !== undefined ? { token: { value: split.token, from } } : {}),
  };
}

function pick(settings: NatsAuthSettings, keys: Array<keyof NatsAuthSettings>): NatsAuthSettings {
  return Object.fromEntries(keys.filter((k) => settings[k] !== undefined).map((k) => [k, settings[k]])) as NatsAuthSettings;
}

function nonEmpty(s: string | undefined): s is string {
  return typeof s === "string" && s.trim() !== "";
}

/** `~/x` as the NATS CLI expands it in context paths. */
function expandHome(path: string): string {
  return path === "~" ? homedir() : path.startsWith("~/") ? join(homedir(), path.slice(2)) : path;
}

/** The name in context.txt, or undefined when there is none (no file, or empty). */
function selectedContext(env: NodeJS.ProcessEnv): string | undefined {
  try {
    const name = readFileSync(join(natsConfigDir(env), "context.txt"), "utf8").trim();
    return name === "" ? undefined : name;
  } catch {
    return undefined;
  }
}

function readContext(name: string, env: NodeJS.ProcessEnv, notes: string[]): ContextFile {
  // The NATS CLI's rule for names: no path separators, no "..".
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.includes("..")) {
    throw new ConfigError([`--context ${JSON.stringify(name)} is not a valid context name (letters, digits, '.', '_', '-')`]);
  }
  const path = join(natsConfigDir(env), "context", `${name}.json`);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([`NATS context "${name}" not found: cannot read ${path} (${code === "ENOENT" ? "no such file" : (code ?? "error")}); \`nats context ls\` lists the contexts`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ConfigError([`NATS context "${name}" (${path}) is not valid JSON`]);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new ConfigError([`NATS context "${name}" (${path}) is not a JSON object`]);
  const raw = json as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const field of ["url", "user", "password", "token", "creds", "nkey", "cert", "key", "ca", "inbox_prefix"] as const) {
    const v = raw[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") throw new ConfigError([`NATS context "${name}" (${path}): ${field} must be a string`]);
    out[field] = v;
  }
  if (raw.tls_first === true) out.tls_first = true;
  for (const field of IGNORED_FIELDS) {
    const v = raw[field];
    if (v !== undefined && v !== null && v !== "" && v !== false) notes.push(`NATS context "${name}": ${field} is not supported by camfleet and is ignored`);
  }
  return out as ContextFile;
}
