// The least-privilege users of deploy/nats/accounts.conf on a real
// nats-server: a node, a gateway and the operator's CLI each run with their
// own user and hit no permission violation; the alert consumer reads events
// but is refused a camera put at once with PERMISSION_DENIED naming the
// subject, not after a timeout.

import { copyFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it, onTestFinished } from "vitest";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { callJson } from "./helpers/http.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { secretsDir, writeServerConfig } from "./helpers/nats-secure.ts";
import { waitFor } from "./helpers/wait.ts";

const ACCOUNTS = fileURLToPath(new URL("../deploy/nats/accounts.conf", import.meta.url));

const PASSWORDS = {
  CAMFLEET_NODE_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_GATEWAY_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_DETECTOR_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_ALERTS_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  CAMFLEET_OPERATOR_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
  NATS_SYS_PASSWORD: `pw-${randomBytes(8).toString("hex")}`,
};
const as = (user: string, password: string) => ({ NATS_USER: user, NATS_PASSWORD: password });

async function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string; ms: number; proc: CamfleetProcess }> {
  const started = Date.now();
  const proc = runCamfleet(args, { env, onCleanup: onTestFinished });
  const { code } = await proc.exited;
  return { code, out: proc.lines.map((l) => (l.raw !== undefined ? String(l.raw) : JSON.stringify(l))).join("\n"), err: proc.stderr(), ms: Date.now() - started, proc };
}

describe("deploy/nats/accounts.conf: one user per role", () => {
  it("node, gateway and operator work with their own users; the alert consumer reads events and is refused a camera put at once", async () => {
    const dir = await secretsDir(onTestFinished);
    // As an operator installs it: accounts.conf next to the server's config, which includes it.
    await copyFile(ACCOUNTS, join(dir, "accounts.conf"));
    const violations: string[] = [];
    const nats = await startNats({
      onCleanup: onTestFinished,
      configFile: await writeServerConfig(dir, "server", 'include "accounts.conf"'),
      env: PASSWORDS,
      onLog: (line) => {
        if (/violation/i.test(line)) violations.push(line);
      },
    });
    const url = nats.url;

    const node = await startFleetNode({ id: "n1", natsUrls: [url], env: as("node", PASSWORDS.CAMFLEET_NODE_PASSWORD), onCleanup: onTestFinished });
    const gateway = await startTestGateway({ natsUrl: url, env: as("gateway", PASSWORDS.CAMFLEET_GATEWAY_PASSWORD), onCleanup: onTestFinished });
    const operator = { NATS_URL: url, ...as("operator", PASSWORDS.CAMFLEET_OPERATOR_PASSWORD) };
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
});
