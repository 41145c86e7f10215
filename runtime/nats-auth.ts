import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  credsAuthenticator,
  nkeyAuthenticator,
  nkeys,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
  type Authenticator,
  type TlsOptions,
} from "@nats-io/transport-node";

/**
 * How a camfleet process authenticates to NATS and secures the link, the NATS
 * tools' way (the same variables as `nats` and nats.go: NATS_USER,
 * NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS, NATS_CA, NATS_CERT,
 * NATS_KEY, and credentials inside NATS_URL). The signing, the creds parsing
 * and the TLS handshake are the nats.js client's own authenticators and TLS
 * options; this file only gathers the settings, reads the files once at start
 * (so a missing or broken file is one clear line naming where it was set,
 * not a retry loop) and says what may be logged.
 */

/** A file the settings point at, and where that was said (`NATS_CREDS`, `--creds`, `context "prod" creds`) for error messages. */
export interface SettingFile {
  path: string;
  from: string;
}

/** A value given inline (user, password, token), and where it came from. */
export interface SettingValue {
  value: string;
  from: string;
}

/** NATS credentials and TLS as configured: values and file paths, nothing read yet. */
export interface NatsAuthSettings {
  user?: SettingValue;
  password?: SettingValue;
  token?: SettingValue;
  /** Path of a file holding a user NKey seed (`SU…`). */
  nkey?: SettingFile;
  /** Path of a `.creds` file (user JWT and its NKey seed). */
  creds?: SettingFile;
  /** PEM CA bundle the server's certificate must chain to. Setting it requires TLS. */
  ca?: SettingFile;
  /** PEM client certificate (with `key`), for servers that verify clients. Setting it requires TLS. */
  cert?: SettingFile;
  /** PEM private key of `cert`. */
  key?: SettingFile;
  /** A `tls://` server URL was given: the connection must be TLS, whatever the server offers. */
  tlsRequired?: boolean;
}

/** Credentials and TLS options, read and checked, ready for `connect()`. Holds secrets: never log it; log `summary`. */
export interface NatsAuth {
  method: "none" | "user-password" | "token" | "nkey" | "creds";
  authenticator?: Authenticator;
  /** Set = TLS required. Unset = the client's default (TLS when the server asks for it). */
  tls?: TlsOptions;
  /** What may be logged: the method, the user name, file paths; never a password, token or seed. */
  summary: Record<string, unknown>;
}

/** Settings that cannot be used: one line per problem, each naming the variable (or flag, or context field) and the path. */
export class NatsAuthError extends Error {
  override readonly name = "NatsAuthError";
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.problems = problems;
  }
}

export const NO_NATS_AUTH: NatsAuth = { method: "none", summary: { method: "none" } };

/** NATS_URL split into server URLs without credentials, and the credentials that were inside them. */
export interface SplitNatsUrls {
  /** The URLs with any `user:pass@` / `token@` taken out: safe to log and to hand to the client. */
  servers: string[];
  user?: string;
  password?: string;
  token?: string;
  /** Some URL is `tls://`. */
  tls: boolean;
}

/**
 * Takes the credentials out of server URLs: `nats://user:pass@host` gives a
 * user and password, `nats://token@host` a token (as nats.go reads them;
 * percent-encoded characters are decoded). The nats.js client refuses
 * URLs with credentials in them, and a URL without them can be logged.
 * All URLs that carry credentials must carry the same ones: one connection
 * has one identity. `from` names the setting in messages.
 */
export function splitNatsUrls(urls: readonly string[], from: string): SplitNatsUrls {
  const servers: string[] = [];
  let found: { user?: string; password?: string; token?: string } | undefined;
  let tls = false;
  for (const raw of urls) {
    const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)(?:([^/?#]*)@)?(.*)$/.exec(raw);
    if (m === null) {
      servers.push(raw); // host:port, no scheme: nats://
      continue;
    }
    const [, scheme, userinfo, rest] = m as unknown as [string, string, string | undefined, string];
    if (scheme.toLowerCase() === "tls://") tls = true;
    servers.push(`${scheme}${rest}`);
    if (userinfo === undefined) continue;
    const colon = userinfo.indexOf(":");
    const these =
      colon < 0
        ? { token: decode(userinfo) }
        : { user: decode(userinfo.slice(0, colon)), password: decode(userinfo.slice(colon + 1)) };
    if (found !== undefined && (found.user !== these.user || found.password !== these.password || found.token !== these.token)) {
      throw new NatsAuthError([`${from} has different credentials in different server URLs; give them once (or in NATS_USER/NATS_PASSWORD, NATS_TOKEN)`]);
    }
    found = these;
  }
  return { servers, tls, ...found };
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s; // not percent-encoded after all: take it as written
  }
}

/**
 * Reads and checks every file the settings name, and builds the client's
 * authenticator and TLS options. Synchronous, at start: errors are
 * NatsAuthError with one line per problem, naming the setting and the path,
 * never a secret.
 *
 * One method at a time: user and password, a token, an NKey seed, or a creds
 * file. `user` without `password` is a token, as in the `nats` CLI
 * (`--user` is "Username or Token").
 */
export function readNatsAuth(settings: NatsAuthSettings, read: (path: string) => Buffer = readFileSync): NatsAuth {
  const problems: string[] = [];
  const methods: string[] = [];
  if (settings.user !== undefined) methods.push(settings.password !== undefined ? `${settings.user.from}/${settings.password.from}` : settings.user.from);
  else if (settings.password !== undefined) problems.push(`${settings.password.from} is set without a user (NATS_USER)`);
  if (settings.token !== undefined) methods.push(settings.token.from);
  if (settings.nkey !== undefined) methods.push(settings.nkey.from);
  if (settings.creds !== undefined) methods.push(settings.creds.from);
  if (methods.length > 1) problems.push(`more than one NATS credential is set (${methods.join(", ")}); set one`);

  const file = (f: SettingFile): Buffer | undefined => readSettingFile(f, read, problems);

  let authenticator: Authenticator | undefined;
  let method: NatsAuth["method"] = "none";
  const summary: Record<string, unknown> = {};
  if (problems.length === 0) {
    if (settings.user !== undefined && settings.password !== undefined) {
      method = "user-password";
      authenticator = usernamePasswordAuthenticator(settings.user.value, settings.password.value);
      Object.assign(summary, { user: settings.user.value, password: "set" });
    } else if (settings.user !== undefined || settings.token !== undefined) {
      method = "token";
      authenticator = tokenAuthenticator((settings.token ?? settings.user)!.value);
      summary.token = "set";
    } else if (settings.nkey !== undefined) {
      const seed = readSeed(settings.nkey, file, problems);
      if (seed !== undefined) {
        method = "nkey";
        authenticator = nkeyAuthenticator(seed);
        Object.assign(summary, { nkey: settings.nkey.path, public_key: nkeys.fromSeed(seed).getPublicKey() });
      }
    } else if (settings.creds !== undefined) {
      const data = file(settings.creds);
      if (data !== undefined) {
        const auth = credsAuthenticator(new Uint8Array(data));
        try {
          // Signing a nonce parses the JWT and the seed: a broken file fails here, at start.
          auth("camfleet-check");
          method = "creds";
          authenticator = auth;
          summary.creds = settings.creds.path;
        } catch {
          problems.push(`${settings.creds.from} names ${JSON.stringify(settings.creds.path)}, which is not a NATS credentials file (a user JWT and an NKey seed, as \`nsc generate creds\` writes)`);
        }
      }
    }
  }

  // TLS: the client reads the PEM files itself at each connect (a renewed
  // certificate is picked up on reconnect); they are parsed here only so a
  // wrong path or a broken file is a start-up error.
  let tls: TlsOptions | undefined;
  const tlsFiles = { ca: settings.ca, cert: settings.cert, key: settings.key };
  if (settings.tlsRequired === true || Object.values(tlsFiles).some((f) => f !== undefined)) {
    tls = {};
    if (settings.ca !== undefined && checkPem(settings.ca, "certificate", file, problems)) tls.caFile = settings.ca.path;
    if (settings.cert !== undefined && checkPem(settings.cert, "certificate", file, problems)) tls.certFile = settings.cert.path;
    if (settings.key !== undefined && checkPem(settings.key, "private key", file, problems)) tls.keyFile = settings.key.path;
    if ((settings.cert === undefined) !== (settings.key === undefined)) {
      problems.push(`${(settings.cert ?? settings.key)!.from} is set without ${settings.cert === undefined ? "a certificate (NATS_CERT)" : "its private key (NATS_KEY)"}; a client certificate needs both`);
    }
    summary.tls = { required: true, ...(settings.ca ? { ca: settings.ca.path } : {}), ...(settings.cert ? { cert: settings.cert.path } : {}), ...(settings.key ? { key: settings.key.path } : {}) };
  }
  if (problems.length > 0) throw new NatsAuthError(problems);
  return { method, ...(authenticator !== undefined ? { authenticator } : {}), ...(tls !== undefined ? { tls } : {}), summary: { method, ...summary } };
}

/** The user seed in an NKey file: the line starting with `SU` (nsc's .nk files hold just that line). */
function readSeed(f: SettingFile, file: (f: SettingFile) => Buffer | undefined, problems: string[]): Uint8Array | undefined {
  const data = file(f);
  if (data === undefined) return undefined;
  const line = data
    .toString("utf8")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l.startsWith("SU"));
  if (line !== undefined) {
    const seed = new TextEncoder().encode(line);
    try {
      nkeys.fromSeed(seed); // checks the checksum and the key type
      return seed;
    } catch {
      // reported below
    }
  }
  problems.push(`${f.from} names ${JSON.stringify(f.path)}, which holds no valid user NKey seed (a line starting with SU, as \`nsc\` or \`nk -gen user\` writes)`);
  return undefined;
}

function checkPem(f: SettingFile, what: "certificate" | "private key", file: (f: SettingFile) => Buffer | undefined, problems: string[]): boolean {
  return pemOf(f, what, file(f), problems) !== undefined;
}

/** The bytes of a file the settings name; a file that cannot be read is one line in `problems` naming the setting and the path. */
export function readSettingFile(f: SettingFile, read: (path: string) => Buffer, problems: string[]): Buffer | undefined {
  try {
    return read(f.path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    problems.push(`${f.from} names ${JSON.stringify(f.path)}, which cannot be read (${code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code === "EISDIR" ? "it is a directory" : (code ?? "error")})`);
    return undefined;
  }
}

/**
 * Reads a PEM certificate (bundle) or private key the settings name and
 * parses it with node:crypto, so a wrong path or a broken file is a start-up
 * line naming the setting and the path, not a failed handshake later.
 * Returns the bytes, or undefined after adding the problem.
 */
export function readPemFile(f: SettingFile, what: "certificate" | "private key", read: (path: string) => Buffer, problems: string[]): Buffer | undefined {
  return pemOf(f, what, readSettingFile(f, read, problems), problems);
}

function pemOf(f: SettingFile, what: "certificate" | "private key", data: Buffer | undefined, problems: string[]): Buffer | undefined {
  if (data === undefined) return undefined;
  try {
    if (what === "certificate") new X509Certificate(data);
    else createPrivateKey(data);
    return data;
  } catch {
    problems.push(`${f.from} names ${JSON.stringify(f.path)}, which is not a PEM ${what}`);
    return undefined;
  }
}
