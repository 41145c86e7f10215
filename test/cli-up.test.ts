// `camfleet up` as a new user meets it: on a terminal (a real pseudo-terminal,
// made by util-linux `script`) it says where everything is and logs readable
// lines, and Ctrl-C typed into that terminal stops it; on a pipe it logs JSON.
// `--demo` adds cameras that stream, one with motion detections, and nothing
// is left running after the stop.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import { DEMO_CAMERAS } from "../cli/demo.ts";
import { runCamfleet, testEnv } from "./helpers/camfleet-process.ts";
import { readDetections } from "./helpers/detections.ts";
import { marked, upEnv } from "./helpers/up.ts";
import { waitFor } from "./helpers/wait.ts";

const BIN = fileURLToPath(new URL("../bin/camfleet", import.meta.url));

describe("camfleet up on a terminal", () => {
  it("prints where everything is, then readable log lines; Ctrl-C stops it and everything it started", async () => {
    const { env, mark } = await upEnv(onTestFinished);
    // script -e: its exit status is camfleet's. stdin is a pipe: what the test writes there is typed into the terminal.
    // exec: camfleet itself is the terminal's foreground process, not a shell waiting for it (a shell may die of the Ctrl-C).
    const child = spawn("script", ["-qfec", `exec ${BIN} up`, "/dev/null"], { env: { ...testEnv(env), LOG_LEVEL: "info", TERM: "xterm" }, stdio: ["pipe", "pipe", "pipe"], detached: true });
    onTestFinished(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // gone
      }
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    // eslint-disable-next-line no-control-regex
    const plain = () => out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "");
    await waitFor(() => /is up: NATS, a node/.test(plain()), { timeoutMs: 45_000, message: `the start screen\n${plain()}` });
    await waitFor(() => /metrics\s+http:\/\/127\.0\.0\.1:\d+\/metrics/.test(plain()), { timeoutMs: 5_000, message: "the whole start screen" });
    const screen = plain();
    expect(screen).toMatch(/dashboard\s+http:\/\/127\.0\.0\.1:\d+\//);
    expect(screen).toMatch(/video \(WHEP\)\s+POST http:\/\/127\.0\.0\.1:\d+\/whep\/\{camera\}/);
    expect(screen).toMatch(/NATS\s+nats:\/\/127\.0\.0\.1:\d+/);
    expect(screen).toMatch(/detector\s+127\.0\.0\.1:\d+ \(reference detector: motion\)/);
    // pino-pretty's lines: time, level, message; no JSON line on the terminal.
    expect(screen).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: node ready/m);
    expect(screen).not.toMatch(/^\{"level"/m);
    expect(out).toContain("\x1b["); // colours, since it is a terminal
    const running = await marked(mark);
    expect(running.map((p) => p.comm)).toContain("nats-server");

    child.stdin.write("\x03"); // Ctrl-C, as typed: the terminal sends SIGINT to camfleet's process group
    const code = await exited;
    expect(code, `exit status ${String(code)}; the terminal's last lines:\n${plain().split("\n").slice(-15).join("\n")}`).toBe(0);
    expect(plain()).toMatch(/INFO: shutting down/);
    await waitFor(async () => (await marked(mark)).length === 0, { timeoutMs: 5_000, message: `no process left: ${JSON.stringify(await marked(mark))}` });
  }, 90_000);
});

describe("camfleet up --demo, stdout a pipe", () => {
  it("logs only JSON, streams the demo cameras with motion detections, and SIGINT leaves no FFmpeg or nats-server behind", async () => {
    const { env, mark, natsPort } = await upEnv(onTestFinished);
    const up = runCamfleet(["up", "--demo"], { env: { ...env, LOG_LEVEL: "info" }, onCleanup: onTestFinished });
    const ready = await up.waitForLog((l) => l.msg === LOG_MESSAGES.upReady, 45_000);
    expect(ready).toMatchObject({ nats: [`nats://127.0.0.1:${natsPort}`], demo: DEMO_CAMERAS.map((c) => c.id) });
    expect(ready.dashboard).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(ready.metrics).toEqual([`${String(ready.dashboard)}metrics`]);

    const nc = await connect({ servers: `nats://127.0.0.1:${natsPort}` });
    onTestFinished(() => nc.close());
    const client = new ControlClient(nc);
    for (const { id } of DEMO_CAMERAS) {
      await waitFor(async () => (await client.cameraStatus(id).catch(() => undefined))?.state === "STREAMING", { timeoutMs: 30_000, intervalMs: 200, message: `${id} STREAMING` });
    }
    // The moving one: frames go to the detector, and motion comes back with boxes.
    await waitFor(async () => (await client.cameraStatus("demo-moving")).frames.detections > 0, { timeoutMs: 20_000, intervalMs: 250, message: "motion detections on demo-moving" });
    // The pedestrians (the clip the test set-up installs): the object model finds people.
    const people = await waitFor(
      async () => {
        const detections = await readDetections(nc, { camera: "demo-people" });
        return detections.find(({ event }) => event.detections.some((d) => d.label === "person"));
      },
      { timeoutMs: 30_000, intervalMs: 500, message: "person detections on demo-people" },
    );
    expect(people.event.solutions).toEqual(["person_detection"]);
    const ffmpegs = (await marked(mark)).filter((p) => p.comm === "ffmpeg");
    expect(ffmpegs).toHaveLength(DEMO_CAMERAS.length);
    await nc.close();

    up.child.kill("SIGINT");
    const exit = await up.exited;
    expect(exit, up.stderr()).toEqual({ code: 0, signal: null });
    expect(up.lines.filter((l) => "raw" in l)).toEqual([]); // every stdout line was JSON
    expect(up.lines.some((l) => l.msg === "demo cameras added")).toBe(true);
    await waitFor(async () => (await marked(mark)).length === 0, { timeoutMs: 5_000, message: `no process left: ${JSON.stringify(await marked(mark))}` });
  }, 120_000);
});
