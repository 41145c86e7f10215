// Secured nats-server set-ups for tests, made at test time: a CA with a
// server and a client certificate (openssl), NKey users (@nats-io/nkeys, via
// the client's re-export), and an operator/account/user chain of JWTs with a
// .creds file (@nats-io/jwt), each as a server config snippet. Nothing is
// checked in: every key lives in a temp dir of the test.

import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createAccount, createOperator, createUser, encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { nkeys } from "@nats-io/transport-node";
import type { RegisterCleanup } from "./nats-harness.ts";

const run = promisify(execFile);

/** A temp dir removed when the scope ends. */
export async function secretsDir(onCleanup: RegisterCleanup): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-auth-"));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface TlsFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all P-256, valid for a day. */
export async function makeTlsFiles(dir: string): Promise<TlsFiles> {
  const f = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run("openssl", ["req", "-x509", ...ec, "-keyout", f("ca-key.pem"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=camfleet test CA"]);
  for (const [who, ext] of [
    // clientAuth too: cluster routes present the server certificate when they dial each other.
    ["server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"],
    ["client", "extendedKeyUsage=clientAuth\n"],
  ] as const) {
    await run("openssl", ["req", ...ec, "-keyout", f(`${who}-key.pem`), "-out", f(`${who}.csr`), "-subj", `/CN=camfleet test ${who}`]);
    await writeFile(f(`${who}.ext`), ext);
    await run("openssl", ["x509", "-req", "-in", f(`${who}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial", "-out", f(`${who}.pem`), "-days", "1", "-extfile", f(`${who}.ext`)]);
  }
  return { ca: f("ca.pem"), serverCert: f("server.pem"), serverKey: f("server-key.pem"), clientCert: f("client.pem"), clientKey: f("client-key.pem") };
}

/** A user NKey: the seed file a client is given and the public key the server lists. */
export async function makeNkeyUser(dir: string, name = "user"): Promise<{ seedFile: string; seed: string; publicKey: string }> {
  const kp = nkeys.createUser();
  const seed = new TextDecoder().decode(kp.getSeed());
  const seedFile = join(dir, `${name}.nk`);
  await writeFile(seedFile, `${seed}\n`, { mode: 0o600 });
  return { seedFile, seed, publicKey: kp.getPublicKey() };
}

export interface OperatorSetup {
  /** Server config lines: operator, memory resolver with the account preloaded, system account. */
  serverConfig: string;
  credsFile: string;
  /** The user's seed inside the creds file (a secret a log must never show). */
  userSeed: string;
}

/**
 * Operator mode (decentralised JWT auth): an operator, a system account, an
 * application account with JetStream, and one user of it as a .creds file,
 * as `nsc` would make them.
 */
export async function makeOperatorCreds(dir: string): Promise<OperatorSetup> {
  const operator = createOperator();
  const sys = createAccount();
  const app = createAccount();
  const user = createUser();
  const operatorJwt = await encodeOperator("camfleet-test", operator, { system_account: sys.getPublicKey() });
  const sysJwt = await encodeAccount("SYS", sys, {}, { signer: operator });
  // Every limit spelled out: a limit left out of the JWT is 0 (no connections at all), not "unlimited".
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };
  const appJwt = await encodeAccount("CAMFLEET", app, { limits: unlimited }, { signer: operator });
  const userJwt = await encodeUser("camfleet", user, app);
  const credsFile = join(dir, "camfleet.creds");
  await writeFile(credsFile, fmtCreds(userJwt, user), { mode: 0o600 });
  const serverConfig = [
    `operator: "${operatorJwt}"`,
    `system_account: "${sys.getPublicKey()}"`,
    "resolver: MEMORY",
    `resolver_preload: { ${sys.getPublicKey()}: "${sysJwt}", ${app.getPublicKey()}: "${appJwt}" }`,
  ].join("\n");
  return { serverConfig, credsFile, userSeed: new TextDecoder().decode(user.getSeed()) };
}

/** Writes a server config file; returns its path. */
export async function writeServerConfig(dir: string, name: string, text: string): Promise<string> {
  const path = join(dir, `${name}.conf`);
  await writeFile(path, `${text}\n`);
  return path;
}
