// deploy/nats/ as an operator installs it: a 3-server cluster started from
// cluster.conf (mutual TLS for clients and routes) with the least-privilege
// users of accounts.conf. A node, a gateway and the operator's CLI each run
// with their own user, over TLS with a client certificate, and hit no
// permission violation; the alert consumer reads events but is refused a
// camera put at once with PERMISSION_DENIED naming the subject, not after a
// timeout.

import { copyFile, readFile, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it, onTestFinished } from "vitest";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { callJson } from "./helpers/http.ts";
import { startNats, startNatsCluster } from "./helpers/nats-harness.ts";
import { makeTlsFiles, secretsDir, writeServerConfig } from "./helpers/nats-secure.ts";
import { ControlClient, connectNats, readNatsAuth, silentLogger } from "../runtime/index.ts";
import { waitFor } from "./helpers/wait.ts";

const DEPLOY = fileURLToPath(new URL("../deploy/nats/", import.meta.url));

const PASSWORDS = {
  CAMFLEET_NODE_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_GATEWAY_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_DETECTOR_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_ALERTS_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_OPERATOR_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  NATS_SYS_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
};

async function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string; ms: number; proc: CamfleetProcess }> {
  const started = Date.now();
  const proc = runCamfleet(args, { env, onCleanup: onTestFinished });
  const { code } = await proc.exited;
  return { code, out: proc.lines.map((l) => (l.raw !== undefined ? String(l.raw) : JSON.stringify(l))).join("\n"), err: proc.stderr(), ms: Date.now() - started, proc };
}

describe("deploy/nats/: a TLS cluster with one user per role", () => {
  it("node, gateway and operator work with their own users; the alert consumer reads events and is refused a camera put at once", async () => {
    const dir = await secretsDir(onTestFinished);
    // As an operator installs them: both files side by side, the certificate
    // paths pointed at this test's CA. The harness's flags set what differs
    // per machine (names, ports, routes, store dirs) and override the file.
    await copyFile(join(DEPLOY, "accounts.conf"), join(dir, "accounts.conf"));
    const tls = await makeTlsFiles(dir);
    const cluster = (await readFile(join(DEPLOY, "cluster.conf"), "utf8"))
      .replaceAll("/etc/nats/tls/", `${dir}/`)
      .replace(/^\s*store_dir: .*$/m, ""); // nats-server refuses --store_dir beside one in the file
    expect(cluster).toContain(tls.serverCert);
    await writeFile(join(dir, "cluster.conf"), cluster);
    const violations: string[] = [];
    const nats = await startNatsCluster({
      onCleanup: onTestFinished,
      configFile: join(dir, "cluster.conf"),
      env: PASSWORDS,
      noAdvertise: true, // the file's client_advertise names hosts that do not exist here
      readyTimeoutMs: 30_000,
      onLog: (_server, line) => {
        if (/violation/i.test(line)) violations.push(line);
      },
    });
    const urls = nats.urls.map((u) => u.replace("nats://", "tls://"));
    const url = urls.join(",");
    const client = { NATS_CA: tls.ca, NATS_CERT: tls.clientCert, NATS_KEY: tls.clientKey };
    const as = (user: string, password: string) => ({ NATS_USER: user, NATS_PASSWORD: password, ...client });

    const operator = { NATS_URL: url, ...as("operator", PASSWORDS.CAMFLEET_OPERATOR_PASSWORD) };
    // The operator owns the streams: created (sized to the store) before the first node, as deploy/nats/ says.
    const apply = await cli(["streams", "apply"], operator);
    expect(apply.code, apply.err).toBe(0);
    expect(apply.out).toMatch(/CAMFLEET_STATUS: created/);
    const node = await startFleetNode({ id: "n1", natsUrls: urls, env: as("node", PASSWORDS.CAMFLEET_NODE_PASSWORD), onCleanup: onTestFinished });
    const gateway = await startTestGateway({ natsUrl: url, env: as("gateway", PASSWORDS.CAMFLEET_GATEWAY_PASSWORD), onCleanup: onTestFinished });
    const alerts = { NATS_URL: url, ...as("alert-consumer", PASSWORDS.CAMFLEET_ALERTS_PASSWORD) };

    const add = await cli(["camera", "add", "cam1", "rtsp://127.0.0.1/sim/cam1"], operator);
    expect(add.code, add.err).toBe(0);
    await waitFor(async () => (await cli(["camera", "ls"], operator)).out.includes("cam1  true     n1     STREAMING"), { timeoutMs: 15_000, message: "cam1 streaming on n1" });
    const viaGateway = await callJson(gateway, "GET", "/cameras/cam1");
    expect(viaGateway.status).toBe(200);
    // Detection history: the gateway user reads the detections stream.
    const history = await callJson(gateway, "GET", "/cameras/cam1/detections?since=1h");
    expect(history.status, `${JSON.stringify(history.body)} ${violations.join("\n")}`).toBe(200);
    const nodes = await cli(["nodes", "--json"], operator);
    expect(JSON.parse(nodes.out)).toMatchObject([{ node: "n1" }]);

    // The alert consumer reads the status events through a durable consumer…
    const events = await cli(["events", "--type", "status", "--durable", "alerts", "--no-follow"], alerts);
    expect(events.code, events.err).toBe(0);
    expect(events.proc.lines.some((l) => l.type === "status" && l.camera === "cam1")).toBe(true);
    // …and nothing legitimate so far hit a permission.
    expect(violations).toEqual([]);

    // …but may not put a camera: told at once, naming the subject (the request timeout is 30 s).
    const put = await cli(["camera", "add", "cam2", "rtsp://127.0.0.1/sim/cam2", "--timeout", "30s"], alerts);
    expect(put.code).toBe(1);
    expect(put.err).toBe("camfleet: PERMISSION_DENIED: NATS does not allow this user to publish to camfleet.ctl.cameras.put (permissions violation); see deploy/nats/ for the permissions of each role\n");
    expect(put.ms).toBeLessThan(15_000);
    expect(violations.length).toBeGreaterThan(0);
    expect(violations.every((l) => l.includes('"alert-consumer"'))).toBe(true);
    // Nothing was changed.
    expect((await callJson(gateway, "GET", "/cameras/cam2")).status).toBe(404);
    expect(node.alive()).toBe(true);
  });

  it("a reply inbox the user may not subscribe to is PERMISSION_DENIED at once; with the allowed inbox_prefix the request goes out", async () => {
    const dir = await secretsDir(onTestFinished);
    const nats = await startNats({
      onCleanup: onTestFinished,
      configFile: await writeServerConfig(dir, "server", 'authorization { users: [ { user: ops, password: "pw-ops", permissions: { publish: ["camfleet.ctl.>"], subscribe: ["_INBOX_ops.>"] } } ] }'),
    });
    const nc = await connectNats({ servers: [nats.url], auth: readNatsAuth({ user: { value: "ops", from: "test" }, password: { value: "pw-ops", from: "test" } }), name: "t", logger: silentLogger() });
    onTestFinished(() => nc.close());
    const started = Date.now();
    const denied = await new ControlClient(nc, { timeoutMs: 30_000 }).listNodes().catch((e: unknown) => e);
    expect(denied).toMatchObject({ code: "PERMISSION_DENIED", message: expect.stringMatching(/^NATS does not allow this user to subscribe to _INBOX\.\S+\.\* \(permissions violation\)/) });
    expect(Date.now() - started).toBeLessThan(5_000);
    // The prefix the account allows: the request is sent, and with no node up the answer is "no node", not a permission error.
    const allowed = await new ControlClient(nc, { inboxPrefix: "_INBOX_ops" }).listNodes().catch((e: unknown) => e);
    expect(allowed).toMatchObject({ code: "UNAVAILABLE", message: "no camfleet node is serving camfleet.ctl.nodes.list" });
  });
});
