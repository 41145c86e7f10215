// `camfleet camera …`: the camera specs in the cluster and their live status.

import type { Command } from "commander";
import { createSpinner } from "nanospinner";
import { CameraSpecSchema, CamfleetError, parseOrThrow, type CameraSpec, type CameraSpecInput, type CameraStatus } from "../../subjects/index.ts";
import type { ControlClient } from "../../runtime/index.ts";
import { EXIT_CAMERA_ERROR, EXIT_USAGE, EXIT_WAIT_TIMEOUT, natsFlags, parseDuration, withClient, type ClientFlags } from "../client.ts";
import { colourState, fields, print, table } from "../output.ts";

interface WaitFlags {
  wait?: boolean;
  waitTimeout: string;
}

const WAIT_HELP = "then wait until the camera is STREAMING, showing its progress (exit 0; 3 if it is in ERROR then, 4 if still not streaming)";
const WAIT_TIMEOUT_HELP = "how long --wait waits, e.g. 30s, 2m";

export function cameraCommands(program: Command): void {
  const camera = program.command("camera").description("manage cameras (talks to the cluster at NATS_URL, default nats://127.0.0.1:4222)");

  natsFlags(camera.command("add <id> <url>"))
    .description("create or replace a camera")
    .option("--name <name>", "display name")
    .option("--tenant <tenant>", "tenant id", "default")
    .option("--site <site>", "site id", "default")
    .option("--solutions <list>", "comma-separated detector solutions, e.g. motion")
    .option("--ai", "analyse frames with the detector at AI_ENDPOINT (ai.enabled)")
    .option("--ai-fps <n>", "frames per second sent for analysis at most (ai.max_fps; default AI_MAX_FPS)")
    .option("--publish <mode>", "on-demand, always or off", "on-demand")
    .option("--rtsp-transport <tcp|udp>", "RTSP transport", "tcp")
    .option("--transcode", "re-encode a source that is not H.264 (costs CPU; H.264 is always copied)")
    .option("--disabled", "store it without running it")
    .option("--wait", WAIT_HELP)
    .option("--wait-timeout <duration>", WAIT_TIMEOUT_HELP, "30s")
    .option("--json", "print JSON")
    .action((id: string, url: string, o: ClientFlags & WaitFlags & { name?: string; tenant: string; site: string; solutions?: string; ai?: boolean; aiFps?: string; publish: string; rtspTransport: string; transcode?: boolean; disabled?: boolean; json?: boolean }) => {
      const waitMs = waitDeadline(o);
      if (waitMs !== undefined && o.disabled === true) {
        process.stderr.write("camfleet: INVALID_ARGUMENT: --wait and --disabled: a disabled camera never streams\n");
        process.exit(EXIT_USAGE);
      }
      return withClient(o, async (client) => {
        const spec = {
          id,
          url,
          tenant: o.tenant,
          site: o.site,
          publish: o.publish as "on-demand",
          rtsp_transport: o.rtspTransport as "tcp",
          transcode: o.transcode === true,
          enabled: o.disabled !== true,
          ...(o.name !== undefined ? { name: o.name } : {}),
          ...(o.solutions !== undefined ? { solutions: o.solutions.split(",").filter((x) => x !== "") } : {}),
          // Number() of anything but a number is NaN, which the spec schema refuses with INVALID_ARGUMENT.
          ...(o.ai === true || o.aiFps !== undefined ? { ai: { enabled: o.ai === true, ...(o.aiFps !== undefined ? { max_fps: Number(o.aiFps) } : {}) } } : {}),
        };
        const { camera: saved } = await client.putCamera(spec);
        await printSavedAndWait(client, saved, `camera ${saved.id} saved (${saved.enabled ? "enabled" : "disabled"}): ${saved.url}`, o, waitMs);
      });
    });

  natsFlags(camera.command("rm <id>"))
    .description("delete a camera")
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & { json?: boolean }) =>
      withClient(o, async (client) => {
        await client.deleteCamera(id);
        print(o.json, { id, deleted: true }, () => `camera ${id} deleted`);
      }),
    );

  natsFlags(camera.command("ls"))
    .description("list cameras with owner and state")
    .option("--tenant <tenant>", "only this tenant")
    .option("--site <site>", "only this site")
    .option("--json", "print JSON")
    .action((o: ClientFlags & { tenant?: string; site?: string; json?: boolean }) =>
      withClient(o, async (client) => {
        const cameras = await client.listAllCameras({ ...(o.tenant !== undefined ? { tenant: o.tenant } : {}), ...(o.site !== undefined ? { site: o.site } : {}) });
        print(o.json, cameras, () =>
          table(
            ["ID", "ENABLED", "OWNER", "STATE", "URL"],
            cameras.map((c) => [c.camera.id, String(c.camera.enabled), c.owner ?? "-", c.state !== undefined ? colourState(c.state) : "-", c.camera.url]),
          ),
        );
      }),
    );

  natsFlags(camera.command("get <id>"))
    .description("a camera's stored spec, its lease (which node runs it) and revision")
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & { json?: boolean }) =>
      withClient(o, async (client) => {
        const found = await client.getCamera(id);
        print(o.json, found, () => fields(found as unknown as Record<string, unknown>));
      }),
    );

  natsFlags(camera.command("status <id>"))
    .description("a camera's live status, from the node that runs it")
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & { json?: boolean }) =>
      withClient(o, async (client) => {
        const status = await client.cameraStatus(id);
        print(o.json, status, () => fields(status as unknown as Record<string, unknown>));
      }),
    );

  natsFlags(camera.command("edit <id>"))
    .description("change fields of a stored camera: --set key=value, dotted for nested fields (ai.max_fps=2); checked against the camera schema before anything is written")
    .option("--set <key=value>", "a field to change (repeatable); the value is read as JSON when it parses (2, true, [\"motion\"], \"123\"), as text otherwise", collect, [] as string[])
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & { set: string[]; json?: boolean }) => {
      if (o.set.length === 0) {
        process.stderr.write("camfleet: INVALID_ARGUMENT: camera edit needs at least one --set key=value\n");
        process.exit(EXIT_USAGE);
      }
      const sets = o.set.map(parseSet);
      return withClient(o, async (client) => {
        const current = await client.getCamera(id);
        const merged = applySets(current.camera, sets);
        parseOrThrow(CameraSpecSchema, merged, "camera spec");
        // Revision-checked: a change by someone else between the read and this write is refused (PRECONDITION_FAILED), not overwritten.
        const { camera: saved, revision } = await client.putCamera(merged as CameraSpecInput, current.revision !== undefined ? { expectedRevision: current.revision } : {});
        print(o.json, { camera: saved, revision }, () => `camera ${saved.id} changed: ${sets.map((s) => `${s.path.join(".")}=${JSON.stringify(getPath(saved, s.path))}`).join(", ")}`);
      });
    });

  natsFlags(camera.command("start <id>"))
    .description("enable a camera (creating it when --url is given)")
    .option("--url <url>", "source URL")
    .option("--wait", WAIT_HELP)
    .option("--wait-timeout <duration>", WAIT_TIMEOUT_HELP, "30s")
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & WaitFlags & { url?: string; json?: boolean }) => {
      const waitMs = waitDeadline(o);
      return withClient(o, async (client) => {
        const { camera: saved } = await client.startCamera(id, o.url !== undefined ? { url: o.url } : {});
        await printSavedAndWait(client, saved, `camera ${saved.id} enabled`, o, waitMs);
      });
    });

  natsFlags(camera.command("stop <id>"))
    .description("disable a camera")
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & { json?: boolean }) =>
      withClient(o, async (client) => {
        const { camera: saved } = await client.stopCamera(id);
        print(o.json, saved, () => `camera ${saved.id} disabled`);
      }),
    );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** --wait-timeout as ms when --wait is given; checked before anything is sent. */
function waitDeadline(o: WaitFlags): number | undefined {
  return o.wait === true ? parseDuration("--wait-timeout", o.waitTimeout) : undefined;
}

/**
 * Without --wait: prints the saved spec. With it: shows the camera's progress
 * on stderr until it is STREAMING or the time is up, then prints the spec and
 * that last status (`{camera, status}` in JSON) and sets the exit code.
 */
async function printSavedAndWait(client: ControlClient, saved: CameraSpec, line: string, o: WaitFlags & { json?: boolean }, waitMs: number | undefined): Promise<void> {
  if (waitMs === undefined) {
    print(o.json, saved, () => line);
    return;
  }
  if (!saved.enabled) throw new CamfleetError("CONFLICT", `camera ${saved.id} is disabled: nothing to wait for`);
  const outcome = await waitForStreaming(client, saved.id, waitMs);
  print(o.json, { camera: saved, status: outcome.status ?? null }, () => `${line}\n${outcome.summary}`);
  process.exitCode = outcome.exitCode;
}

interface WaitOutcome {
  status: CameraStatus | undefined;
  summary: string;
  exitCode: number;
}

/** How often --wait asks the owner for the camera's status. */
const POLL_MS = 250;

/** Polls `camera.<id>.status` until STREAMING or the deadline; the progress line is a spinner on a terminal, one line per change otherwise. */
export async function waitForStreaming(client: ControlClient, id: string, waitMs: number): Promise<WaitOutcome> {
  const deadline = Date.now() + waitMs;
  // A terminal that reports no width (some pseudo-terminals) sends nanospinner into a loop redrawing: plain lines there.
  const tty = process.stderr.isTTY === true && (process.stderr.columns ?? 0) > 0;
  const spinner = tty ? createSpinner(`camera ${id}: waiting for a node`, { stream: process.stderr }).start() : undefined;
  let lastText = "";
  const show = (text: string) => {
    if (text === lastText) return;
    lastText = text;
    if (spinner !== undefined) spinner.update({ text });
    // Off a terminal the countdown would print a line every poll: say the state and error only.
    else process.stderr.write(`${text.replace(/, retry \d+ in [\d.]+s$/, "")}\n`);
  };
  let status: CameraStatus | undefined;
  // A failing camera alternates ERROR and (briefly) CONNECTING: the deadline
  // may fall on either, so the last ERROR seen is what the wait reports.
  let lastError: CameraStatus | undefined;
  for (;;) {
    try {
      status = await client.cameraStatus(id);
    } catch (err) {
      // NOT_FOUND: no node runs it yet (placement takes a moment); anything else ends the wait.
      if (!(err instanceof CamfleetError && err.code === "NOT_FOUND")) {
        spinner?.error({ text: `camera ${id}: ${err instanceof Error ? err.message : String(err)}` });
        throw err;
      }
      status = undefined;
    }
    const text = progressText(id, status);
    if (status?.state === "STREAMING") {
      if (spinner !== undefined) spinner.success({ text });
      else process.stderr.write(`${text}\n`);
      return { status, summary: text, exitCode: 0 };
    }
    if (status?.state === "ERROR") lastError = status;
    if (Date.now() >= deadline) {
      const failed = lastError !== undefined;
      const summary = `${failed ? progressText(id, lastError) : text} (gave up waiting after ${Math.round(waitMs / 1000)}s)`;
      if (spinner !== undefined) spinner.error({ text: summary });
      else process.stderr.write(`${summary}\n`);
      return { status, summary, exitCode: failed ? EXIT_CAMERA_ERROR : EXIT_WAIT_TIMEOUT };
    }
    show(text);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** `camera c1: STREAMING h264 640x360 @15fps on node-a`, or the error with its retry countdown. */
function progressText(id: string, s: CameraStatus | undefined): string {
  if (s === undefined) return `camera ${id}: waiting for a node`;
  const where = ` on ${s.node}`;
  if (s.state === "STREAMING") {
    const st = s.stream;
    return `camera ${id}: ${colourState(s.state)}${st !== undefined ? ` ${st.codec} ${st.width}x${st.height} @${st.fps}fps` : ""}${where}`;
  }
  if (s.state === "ERROR" && s.error !== undefined) {
    // The retry is due retry_in_ms after the camera entered ERROR (since_ts).
    const left = Math.max(0, s.since_ts + s.error.retry_in_ms - Date.now());
    return `camera ${id}: ${colourState(s.state)} ${s.error.code}: ${s.error.detail}${where}, retry ${s.error.attempt + 1} in ${(left / 1000).toFixed(1)}s`;
  }
  return `camera ${id}: ${colourState(s.state)}${where}`;
}

// ---------------------------------------------------------------- edit --set

interface SetOp {
  path: string[];
  value: unknown;
}

/** `ai.max_fps=2` → {path: [ai, max_fps], value: 2}; a malformed one exits 2. */
function parseSet(text: string): SetOp {
  const eq = text.indexOf("=");
  const key = eq > 0 ? text.slice(0, eq) : "";
  const path = key.split(".");
  if (eq <= 0 || path.some((p) => p === "")) {
    process.stderr.write(`camfleet: INVALID_ARGUMENT: --set wants key=value, e.g. ai.max_fps=2 or name=Door (got ${JSON.stringify(text)})\n`);
    process.exit(EXIT_USAGE);
  }
  if (path[0] === "id") {
    process.stderr.write("camfleet: INVALID_ARGUMENT: --set id: a camera's id cannot change; add a new camera and remove this one\n");
    process.exit(EXIT_USAGE);
  }
  const raw = text.slice(eq + 1);
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    // Not JSON: the text as it is (names, URLs).
  }
  return { path, value };
}

/** A copy of `spec` with each set applied; unknown keys stay in, for the schema to name. */
function applySets(spec: CameraSpec, sets: SetOp[]): Record<string, unknown> {
  const out = structuredClone(spec) as unknown as Record<string, unknown>;
  for (const { path, value } of sets) {
    let node = out;
    for (const part of path.slice(0, -1)) {
      const next = node[part];
      if (next === undefined) node[part] = {};
      else if (next === null || typeof next !== "object" || Array.isArray(next)) {
        throw new CamfleetError("INVALID_ARGUMENT", `--set ${path.join(".")}: ${part} is not an object`);
      }
      node = node[part] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
  }
  return out;
}

function getPath(value: unknown, path: string[]): unknown {
  return path.reduce<unknown>((v, p) => (v !== null && typeof v === "object" ? (v as Record<string, unknown>)[p] : undefined), value);
}
