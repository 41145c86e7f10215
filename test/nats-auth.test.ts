// NATS credentials and TLS settings: NATS_* variables, credentials inside
// NATS_URL, the files read at start, the CLI's flags and NATS contexts, and
// what the config log line shows. No server here (test/nats-auth-fleet.test.ts
// runs real ones for each method).

import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { resolveNats } from "../cli/nats-context.ts";
import { ConfigError, describeConfig, loadConfig, natsEnvSettings, splitNatsUrls } from "../runtime/index.ts";
import { makeNkeyUser, makeOperatorCreds, makeTlsFiles, secretsDir } from "./helpers/nats-secure.ts";

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env, "node");
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("credentials inside NATS_URL", () => {
  it("takes user:password and token out of the URLs, decoding percent-escapes", () => {
    expect(splitNatsUrls(["nats://alice:p%40ss%3Fw@127.0.0.1:4222", "nats://alice:p%40ss%3Fw@127.0.0.1:4223"], "NATS_URL")).toEqual({
      servers: ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"],
      user: "alice",
      password: "p@ss?w",
      tls: false,
    });
    expect(splitNatsUrls(["tls://s3cr3t-token@nats.example:4222", "127.0.0.1:4222"], "NATS_URL")).toEqual({
      servers: ["tls://nats.example:4222", "127.0.0.1:4222"],
      token: "s3cr3t-token",
      tls: true,
    });
  });

  it("refuses different credentials in different URLs", () => {
    expect(() => splitNatsUrls(["nats://a:1@h1:4222", "nats://b:2@h2:4222"], "NATS_URL")).toThrow(/NATS_URL has different credentials/);
  });

  it("loadConfig keeps them out of natsServers and the config log line", () => {
    const c = loadConfig({ NATS_URL: "nats://alice:hunter2@127.0.0.1:4222" }, "node");
    expect(c.natsServers).toEqual(["nats://127.0.0.1:4222"]);
    expect(c.natsAuth.method).toBe("user-password");
    const logged = JSON.stringify(describeConfig(c));
    expect(logged).not.toContain("hunter2");
    expect(describeConfig(c).natsAuth).toEqual({ method: "user-password", user: "alice", password: "set" });
    const t = loadConfig({ NATS_URL: "nats://tok-123456@127.0.0.1:4222" }, "node");
    expect(t.natsAuth.method).toBe("token");
    expect(JSON.stringify(describeConfig(t))).not.toContain("tok-123456");
  });

  it("a tls:// URL requires TLS", () => {
    expect(loadConfig({ NATS_URL: "tls://127.0.0.1:4222" }, "node").natsAuth.tls).toEqual({});
    expect(loadConfig({ NATS_URL: "nats://127.0.0.1:4222" }, "node").natsAuth.tls).toBeUndefined();
  });
});

describe("NATS_* variables", () => {
  it("NATS_USER/NATS_PASSWORD, NATS_TOKEN, and NATS_USER alone as a token (as the nats CLI reads it)", () => {
    expect(loadConfig({ NATS_URL: "nats://h:4222", NATS_USER: "u", NATS_PASSWORD: "p" }, "node").natsAuth.method).toBe("user-password");
    expect(loadConfig({ NATS_URL: "nats://h:4222", NATS_TOKEN: "t" }, "node").natsAuth.method).toBe("token");
    expect(loadConfig({ NATS_URL: "nats://h:4222", NATS_USER: "t" }, "node").natsAuth.method).toBe("token");
    expect(loadConfig({}, "node").natsAuth.method).toBe("none");
  });

  it("refuses two methods at once, and a password without a user, naming the variables", () => {
    expect(problemsOf({ NATS_TOKEN: "t", NATS_USER: "u", NATS_PASSWORD: "p" })).toEqual([
      "more than one NATS credential is set (NATS_USER/NATS_PASSWORD, NATS_TOKEN); set one",
    ]);
    expect(problemsOf({ NATS_URL: "nats://u:p@h:4222", NATS_TOKEN: "t" })[0]).toMatch(/NATS_URL carries credentials and NATS_USER, NATS_PASSWORD or NATS_TOKEN is set too/);
    expect(problemsOf({ NATS_PASSWORD: "p" })).toEqual(["NATS_PASSWORD is set without a user (NATS_USER)"]);
    // The secret itself never appears in a message.
    expect(problemsOf({ NATS_PASSWORD: "" }).join("\n")).toBe("NATS_PASSWORD must not be empty");
  });

  it("reads the files at start: a missing, unreadable or wrong file is one line naming the variable and the path", async () => {
    const dir = await secretsDir(onTestFinished);
    const missing = join(dir, "nope.creds");
    expect(problemsOf({ NATS_CREDS: missing })).toEqual([`NATS_CREDS names ${JSON.stringify(missing)}, which cannot be read (no such file)`]);
    expect(problemsOf({ NATS_NKEY: dir })).toEqual([`NATS_NKEY names ${JSON.stringify(dir)}, which cannot be read (it is a directory)`]);
    const junk = join(dir, "junk.txt");
    await writeFile(junk, "not a key\n");
    expect(problemsOf({ NATS_NKEY: junk })[0]).toMatch(/^NATS_NKEY names ".*junk.txt", which holds no valid user NKey seed/);
    expect(problemsOf({ NATS_CREDS: junk })[0]).toMatch(/^NATS_CREDS names ".*junk.txt", which is not a NATS credentials file/);
    expect(problemsOf({ NATS_CA: junk })).toEqual([`NATS_CA names ${JSON.stringify(junk)}, which is not a PEM certificate`]);
    expect(problemsOf({ NATS_CA: junk, NATS_KEY: junk, NATS_CREDS: missing })).toHaveLength(4); // every problem at once (key: not PEM, and no cert)
    const tls = await makeTlsFiles(dir);
    expect(problemsOf({ NATS_CERT: tls.clientCert })).toEqual([`NATS_CERT is set without its private key (NATS_KEY); a client certificate needs both`]);
    expect(problemsOf({ NATS_CERT: tls.clientCert, NATS_KEY: tls.clientCert })).toEqual([`NATS_KEY names ${JSON.stringify(tls.clientCert)}, which is not a PEM private key`]);
  });

  it("good files give the client's authenticators and TLS options, and a log line with paths, never seeds", async () => {
    const dir = await secretsDir(onTestFinished);
    const nkey = await makeNkeyUser(dir);
    const c = loadConfig({ NATS_URL: "nats://127.0.0.1:4222", NATS_NKEY: nkey.seedFile }, "node");
    expect(c.natsAuth.method).toBe("nkey");
    // The authenticator signs the server's nonce with the seed.
    expect(c.natsAuth.authenticator?.("nonce")).toMatchObject({ nkey: nkey.publicKey, sig: expect.any(String) });
    expect(describeConfig(c).natsAuth).toEqual({ method: "nkey", nkey: nkey.seedFile, public_key: nkey.publicKey });
    expect(JSON.stringify(describeConfig(c))).not.toContain(nkey.seed);

    const op = await makeOperatorCreds(dir);
    const tls = await makeTlsFiles(dir);
    const cc = loadConfig({ NATS_URL: "nats://127.0.0.1:4222", NATS_CREDS: op.credsFile, NATS_CA: tls.ca, NATS_CERT: tls.clientCert, NATS_KEY: tls.clientKey }, "node");
    expect(cc.natsAuth.method).toBe("creds");
    // NATS_CA alone requires TLS, as in nats.go.
    expect(cc.natsAuth.tls).toEqual({ caFile: tls.ca, certFile: tls.clientCert, keyFile: tls.clientKey });
    expect(JSON.stringify(describeConfig(cc))).not.toContain(op.userSeed);
    expect(describeConfig(cc).natsAuth).toEqual({ method: "creds", creds: op.credsFile, tls: { required: true, ca: tls.ca, cert: tls.clientCert, key: tls.clientKey } });
  });
});

describe("the CLI's --server, --creds and --context (NATS CLI context files)", () => {
  async function contexts(files: Record<string, object>, selected?: string): Promise<string> {
    const xdg = await secretsDir(onTestFinished);
    await mkdir(join(xdg, "nats", "context"), { recursive: true });
    for (const [name, body] of Object.entries(files)) await writeFile(join(xdg, "nats", "context", `${name}.json`), JSON.stringify(body));
    if (selected !== undefined) await writeFile(join(xdg, "nats", "context.txt"), `${selected}\n`);
    return xdg;
  }
  const resolve = (flags: Parameters<typeof resolveNats>[0], env: Record<string, string>) => resolveNats(flags, env, natsEnvSettings(env));

  it("reads a named context's url, credentials and TLS files, as the nats CLI writes them (empty strings = unset)", async () => {
    const xdg = await contexts({
      prod: { description: "", url: "tls://ctx-user:ctx-pw@10.0.0.1:4222,tls://10.0.0.2:4222", token: "", user: "", password: "", creds: "", nkey: "", cert: "", key: "", ca: "/etc/nats/ca.pem", nsc: "", jetstream_domain: "", tls_first: true, inbox_prefix: "_INBOX_ops" },
    });
    const r = resolve({ context: "prod" }, { XDG_CONFIG_HOME: xdg });
    expect(r.servers).toEqual(["tls://10.0.0.1:4222", "tls://10.0.0.2:4222"]);
    expect(r.settings).toEqual({
      user: { value: "ctx-user", from: 'context "prod" url' },
      password: { value: "ctx-pw", from: 'context "prod" url' },
      ca: { path: "/etc/nats/ca.pem", from: 'context "prod" ca' },
      tlsRequired: true,
    });
    expect(r).toMatchObject({ context: "prod", tlsFirst: true, inboxPrefix: "_INBOX_ops", notes: [] });
  });

  it("precedence: flag > environment > context; credentials as a whole from the highest that has any", async () => {
    const xdg = await contexts({ prod: { url: "nats://ctx:4222", user: "cu", password: "cp", ca: "/ctx/ca.pem" } }, "prod");
    // The selected context, when nothing else names a server.
    expect(resolve({}, { XDG_CONFIG_HOME: xdg }).servers).toEqual(["nats://ctx:4222"]);
    // NATS_URL set: the selected context is not read at all (its credentials do not leak into another server's connection).
    const env = resolve({}, { XDG_CONFIG_HOME: xdg, NATS_URL: "nats://env:4222" });
    expect(env.servers).toEqual(["nats://env:4222"]);
    expect(env.settings).toEqual({});
    expect(env.context).toBeUndefined();
    // --context named: its fields fill in what flags and variables do not say.
    const named = resolve({ context: "prod" }, { XDG_CONFIG_HOME: xdg, NATS_URL: "nats://env:4222" });
    expect(named.servers).toEqual(["nats://env:4222"]);
    expect(named.settings.user?.value).toBe("cu");
    // An environment credential replaces the context's user and password (no mixing into two methods).
    const envCreds = resolve({ context: "prod" }, { XDG_CONFIG_HOME: xdg, NATS_TOKEN: "et" });
    expect(envCreds.settings).toEqual({ token: { value: "et", from: "NATS_TOKEN" }, ca: { path: "/ctx/ca.pem", from: 'context "prod" ca' } });
    // Flags over both.
    const flags = resolve({ context: "prod", server: "nats://flag-user:flag-pw@flag:4222", creds: undefined }, { XDG_CONFIG_HOME: xdg, NATS_TOKEN: "et", NATS_CA: "/env/ca.pem" });
    expect(flags.servers).toEqual(["nats://flag:4222"]);
    expect(flags.settings).toEqual({
      user: { value: "flag-user", from: "--server" },
      password: { value: "flag-pw", from: "--server" },
      ca: { path: "/env/ca.pem", from: "NATS_CA" },
    });
    expect(resolve({ creds: "/f.creds" }, { XDG_CONFIG_HOME: xdg, NATS_URL: "nats://env:4222", NATS_TOKEN: "et" }).settings).toEqual({ creds: { path: "/f.creds", from: "--creds" } });
  });

  it("a context that does not exist, or is not JSON, is a clear error; unsupported fields are named", async () => {
    const xdg = await contexts({ broken: [] as unknown as object, nsc: { url: "nats://h:4222", nsc: "nsc://op/acct/user" } });
    expect(() => resolve({ context: "nope" }, { XDG_CONFIG_HOME: xdg })).toThrow(/NATS context "nope" not found: cannot read .*nats\/context\/nope\.json \(no such file\)/);
    expect(() => resolve({ context: "broken" }, { XDG_CONFIG_HOME: xdg })).toThrow(/is not a JSON object/);
    expect(() => resolve({ context: "../x" }, { XDG_CONFIG_HOME: xdg })).toThrow(/not a valid context name/);
    // A bad --server never echoes its value (it may hold a password).
    expect(() => resolve({ server: "admin:hunter2@host:4222" }, {})).toThrow(/^--server must be a comma-separated list of nats:\/\/host:port or tls:\/\/host:port URLs$/);
    expect(resolve({ context: "nsc" }, { XDG_CONFIG_HOME: xdg }).notes).toEqual(['NATS context "nsc": nsc is not supported by camfleet and is ignored']);
    // No context.txt and no context named: nothing is read, no error.
    expect(resolve({}, { XDG_CONFIG_HOME: xdg }).servers).toBeUndefined();
  });
});
