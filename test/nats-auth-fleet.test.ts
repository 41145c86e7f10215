// camfleet on a secured nats-server, one real server per auth method: a node
// (process), a gateway (in-process) and the CLI (process) each connect with
// user/password, a token, an NKey, a .creds file (operator mode), or TLS with
// a client certificate (`verify: true`), through the NATS_* variables, URL
// credentials, CLI flags and a NATS CLI context. Then every captured log line
// and output is scanned for the secrets. And the failures: a wrong password
// is UNAUTHENTICATED at once (not a retry loop) with nothing left running,
// and `tls://` against a server without TLS fails clearly.

import { mkdir, writeFile } from "node:fs/promises";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { randomBytes } from "node:crypto";
import { describe, expect, it, onTestFinished } from "vitest";
import { startGateway } from "../gateway/index.ts";
import { createLogger, createRegistry, LOG_MESSAGES, loadConfig, silentLogger } from "../runtime/index.ts";
import { CamfleetError } from "../subjects/index.ts";
import { isAlive, runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { callJson } from "./helpers/http.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { makeNkeyUser, makeOperatorCreds, makeTlsFiles, secretsDir, writeServerConfig } from "./helpers/nats-secure.ts";

/** A fresh secret per run, with the characters that break naive URL handling. */
const secret = (prefix: string) => `${prefix}-${randomBytes(6).toString("hex")}`;
const PASSWORD = `${secret("pw")}:/@?x`;
const TOKEN = secret("tok");

interface Setup {
  /** Server config (the authorization / tls / operator part). */
  serverConfig: string;
  /** Client URL scheme. */
  scheme: "nats" | "tls";
  /** How the node connects: NATS_URL (given the plain host:port URL) and variables. */
  node: (url: string) => { urls: string[]; env: Record<string, string> };
  /** How the gateway connects. */
  gateway: (url: string) => { url: string; env: Record<string, string> };
  /** How the CLI connects: extra arguments and environment. */
  cli: (url: string, dir: string) => Promise<{ args: string[]; env: Record<string, string> }>;
  /** Values that must appear in no log line or output. */
  secrets: string[];
  /** natsAuth.method the node's config log line shows. */
  method: string;
}

/** A NATS CLI context `name` in a fresh XDG_CONFIG_HOME; returns the env that selects that folder. */
async function natsContext(dir: string, name: string, body: Record<string, unknown>): Promise<Record<string, string>> {
  const xdg = join(dir, "xdg");
  await mkdir(join(xdg, "nats", "context"), { recursive: true });
  await writeFile(join(xdg, "nats", "context", `${name}.json`), JSON.stringify({ description: "", url: "", token: "", user: "", password: "", creds: "", nkey: "", cert: "", key: "", ca: "", ...body }));
  return { XDG_CONFIG_HOME: xdg };
}

const withUser = (url: string, user: string, pass: string) => url.replace("://", `://${encodeURIComponent(user)}:${encodeURIComponent(pass)}@`);

async function setups(dir: string): Promise<Record<string, Setup>> {
  const nkey = await makeNkeyUser(dir);
  const op = await makeOperatorCreds(dir);
  const tls = await makeTlsFiles(dir);
  const tlsEnv = { NATS_CA: tls.ca, NATS_CERT: tls.clientCert, NATS_KEY: tls.clientKey };
  return {
    "user/password": {
      serverConfig: `authorization { users: [ { user: "camfleet", password: "${PASSWORD}" } ] }`,
      scheme: "nats",
      node: (url) => ({ urls: [url], env: { NATS_USER: "camfleet", NATS_PASSWORD: PASSWORD } }),
      gateway: (url) => ({ url: withUser(url, "camfleet", PASSWORD), env: {} }), // credentials inside NATS_URL
      cli: async (url) => ({ args: ["--server", withUser(url, "camfleet", PASSWORD)], env: {} }),
      secrets: [PASSWORD, encodeURIComponent(PASSWORD)],
      method: "user-password",
    },
    token: {
      serverConfig: `authorization { token: "${TOKEN}" }`,
      scheme: "nats",
      node: (url) => ({ urls: [url.replace("://", `://${TOKEN}@`)], env: {} }), // nats://token@host
      gateway: (url) => ({ url, env: { NATS_TOKEN: TOKEN } }),
      cli: async (url, d) => ({ args: ["--context", "tok"], env: await natsContext(d, "tok", { url, token: TOKEN }) }),
      secrets: [TOKEN],
      method: "token",
    },
    nkey: {
      serverConfig: `authorization { users: [ { nkey: "${nkey.publicKey}" } ] }`,
      scheme: "nats",
      node: (url) => ({ urls: [url], env: { NATS_NKEY: nkey.seedFile } }),
      gateway: (url) => ({ url, env: { NATS_NKEY: nkey.seedFile } }),
      // The selected context (context.txt), as after `nats context select nk`: no --server, no NATS_URL.
      cli: async (url, d) => {
        const env = await natsContext(d, "nk", { url, nkey: nkey.seedFile });
        await writeFile(join(env.XDG_CONFIG_HOME!, "nats", "context.txt"), "nk\n");
        return { args: [], env };
      },
      secrets: [nkey.seed],
      method: "nkey",
    },
    "creds (operator mode)": {
      serverConfig: op.serverConfig,
      scheme: "nats",
      node: (url) => ({ urls: [url], env: { NATS_CREDS: op.credsFile } }),
      gateway: (url) => ({ url, env: { NATS_CREDS: op.credsFile } }),
      cli: async (url) => ({ args: ["-s", url, "--creds", op.credsFile, "--timeout", "5s"], env: {} }),
      secrets: [op.userSeed],
      method: "creds",
    },
    "TLS with a client certificate (verify: true)": {
      serverConfig: `tls { cert_file: "${tls.serverCert}", key_file: "${tls.serverKey}", ca_file: "${tls.ca}", verify: true }`,
      scheme: "tls",
      node: (url) => ({ urls: [url], env: tlsEnv }),
      gateway: (url) => ({ url, env: tlsEnv }),
      cli: async (url) => ({ args: ["--server", url], env: tlsEnv }),
      secrets: [readFileSync(tls.clientKey, "utf8").split("\n")[1]!], // a line of the private key
      method: "none",
    },
  };
}

/** A logger whose lines are kept, for the secret scan. */
function capturingLogger(lines: string[]) {
  const destination = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return createLogger({ node: "gw", level: "debug", destination });
}

function allOutput(procs: CamfleetProcess[], extra: string[]): string {
  return [...procs.flatMap((p) => [...p.lines.map((l) => JSON.stringify(l)), p.stderr()]), ...extra].join("\n");
}

async function cli(args: string[], env: Record<string, string>): Promise<CamfleetProcess & { exit: { code: number | null } }> {
  const p = runCamfleet(args, { env, onCleanup: onTestFinished });
  return Object.assign(p, { exit: await p.exited });
}

const METHODS = ["user/password", "token", "nkey", "creds (operator mode)", "TLS with a client certificate (verify: true)"];

describe("camfleet on a secured nats-server", () => {
  it.each(METHODS)("node, gateway and CLI connect with %s, and no secret is logged", async (name) => {
    const dir = await secretsDir(onTestFinished);
    const s = (await setups(dir))[name]!;
    const nats = await startNats({ onCleanup: onTestFinished, configFile: await writeServerConfig(dir, "server", s.serverConfig) });
    const url = `${s.scheme}://127.0.0.1:${nats.server.port}`;

    const nodeConn = s.node(url);
    const node = await startFleetNode({ id: "n1", natsUrls: nodeConn.urls, env: nodeConn.env, onCleanup: onTestFinished });
    const starting = node.proc.lines.find((l) => l.msg === "starting node") as { config: { natsAuth: { method: string }; natsServers: string[] } };
    expect(starting.config.natsAuth.method).toBe(s.method);
    expect(starting.config.natsServers).toEqual([url]); // credentials taken out of the URL

    const gwLines: string[] = [];
    const gwConn = s.gateway(url);
    const gateway = await startTestGateway({ natsUrl: gwConn.url, env: gwConn.env, onCleanup: onTestFinished, logger: capturingLogger(gwLines) });

    const { args, env } = await s.cli(url, dir);
    const add = await cli(["camera", "add", "cam1", "rtsp://127.0.0.1/sim/cam1", ...args], env);
    expect(add.exit.code, add.stderr()).toBe(0);
    expect(add.lines[0]?.raw).toMatch(/^camera cam1 saved \(enabled\)/);
    const got = await callJson(gateway, "GET", "/cameras/cam1");
    expect(got.status).toBe(200);
    expect(got.body.id).toBe("cam1");
    const nodes = await cli(["nodes", "--json", ...args], env);
    expect(nodes.exit.code, nodes.stderr()).toBe(0);
    expect(JSON.parse(nodes.lines.map((l) => (l.raw as string | undefined) ?? JSON.stringify(l)).join("\n"))).toMatchObject([{ node: "n1" }]);

    await node.proc.stop();
    await gateway.stop();
    const text = allOutput([node.proc, add, nodes], gwLines);
    expect(text.length).toBeGreaterThan(1000); // the scan read real logs (debug level)
    for (const value of s.secrets) expect(text.includes(value), `secret ${value.slice(0, 4)}… found in the output`).toBe(false);
  });
});

/** Processes (besides this one) whose environment carries the marker: what a test started and did not reap. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, "latin1").split("\0").includes(marker)) found.push(Number(entry));
    } catch {
      // gone, or not ours
    }
  }
  return found;
}

describe("refused connections are told at once", () => {
  it("a wrong password: the node exits with UNAUTHENTICATED within seconds, nothing left running; the CLI and the gateway say so too", async () => {
    const dir = await secretsDir(onTestFinished);
    const nats = await startNats({ onCleanup: onTestFinished, configFile: await writeServerConfig(dir, "server", `authorization { user: "camfleet", password: "${PASSWORD}" }`) });
    const wrong = secret("wrong");
    const marker = `CAMFLEET_AUTH_TEST=${randomBytes(4).toString("hex")}`;
    const [markerName, markerValue] = marker.split("=") as [string, string];

    const started = Date.now();
    const node = runCamfleet(["node"], {
      env: { NODE_ID: "n1", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", NATS_URL: nats.url, NATS_USER: "camfleet", NATS_PASSWORD: wrong, [markerName]: markerValue },
      onCleanup: onTestFinished,
    });
    const exit = await node.exited;
    const elapsed = Date.now() - started;
    expect(exit.code).toBe(1);
    // tsx start-up is most of it; a retry loop would never end (the old behaviour).
    expect(elapsed).toBeLessThan(15_000);
    expect(node.stderr()).toMatch(new RegExp(`^camfleet node: UNAUTHENTICATED: NATS at ${nats.url.replaceAll(".", "\\.")} refused the credentials \\(Authorization Violation\\)`, "m"));
    expect(node.lines.some((l) => l.msg === LOG_MESSAGES.natsNotReachableYet)).toBe(false); // not treated as "not up yet"
    expect(isAlive(node.child.pid!)).toBe(false);
    expect(processesWith(marker)).toEqual([]);

    const ls = await cli(["camera", "ls", "--server", withUser(nats.url, "camfleet", wrong)], {});
    expect(ls.exit.code).toBe(1);
    expect(ls.stderr()).toMatch(/^camfleet: UNAUTHENTICATED: NATS at nats:\/\/127\.0\.0\.1:\d+ refused the credentials \(Authorization Violation\)/);

    const config = loadConfig({ NATS_URL: nats.url, NATS_USER: "camfleet", NATS_PASSWORD: wrong, HTTP_PORT: "0" }, "gateway");
    const gw = startGateway({ config, logger: silentLogger(), registry: createRegistry({ node: "gw" }, { processMetrics: false }) });
    onTestFinished(async () => void (await gw.then((g) => g.stop()).catch(() => undefined)));
    const err = await gw.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CamfleetError);
    expect((err as CamfleetError).code).toBe("UNAUTHENTICATED");

    const text = allOutput([node, ls], [String((err as Error).message)]);
    expect(text.includes(wrong) || text.includes(PASSWORD)).toBe(false);
  });

  it("tls:// against a server without TLS fails clearly, for the CLI and the node", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const tlsUrl = nats.url.replace("nats://", "tls://");
    const ls = await cli(["camera", "ls", "-s", tlsUrl], {});
    expect(ls.exit.code).toBe(1);
    expect(ls.stderr()).toMatch(/^camfleet: UNAVAILABLE: cannot connect to NATS at tls:\/\/127\.0\.0\.1:\d+: server does not support 'tls'/);

    const node = runCamfleet(["node"], { env: { NODE_ID: "n1", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", NATS_URL: tlsUrl }, onCleanup: onTestFinished });
    expect((await node.exited).code).toBe(1);
    expect(node.stderr()).toMatch(/^camfleet node: UNAVAILABLE: cannot connect to NATS at tls:\/\/127\.0\.0\.1:\d+: server does not support 'tls'/m);
  });

  it("a missing credentials file stops start-up with exit 78, naming the variable and the path", async () => {
    const node = runCamfleet(["node"], { env: { NATS_URL: "nats://127.0.0.1:1", NATS_CREDS: "/nonexistent/camfleet.creds" }, onCleanup: onTestFinished });
    expect((await node.exited).code).toBe(78);
    expect(node.stderr()).toBe('camfleet: invalid configuration: NATS_CREDS names "/nonexistent/camfleet.creds", which cannot be read (no such file)\n');
  });
});
