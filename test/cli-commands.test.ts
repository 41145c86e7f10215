// The client commands as a user types them: the real `camfleet` against a real
// nats-server and a real node whose cameras run FFmpeg on testsrc: sources.
// Kept apart from node-cli.test.ts, which is slow enough already.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startNats, type NatsHandle } from "./helpers/nats-harness.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";

const run = promisify(execFile);

// vitest ignores hooks registered inside beforeAll: teardowns are collected here.
const teardown: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const fn of teardown.reverse()) await fn();
});

let nats: NatsHandle;

beforeAll(async () => {
  nats = await startNats({ onCleanup: (fn) => void teardown.push(fn) });
  await startFleetNode({
    id: "n1",
    natsUrls: [nats.url],
    env: { CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true", LOG_LEVEL: "info" },
    onCleanup: (fn) => void teardown.push(fn),
  });
}, 60_000);

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  proc: CamfleetProcess;
}

/** Runs `camfleet <args>` to its end, against the test's NATS through --server unless `env` says otherwise. */
async function camfleet(args: string[], opts: { env?: Record<string, string>; server?: boolean } = {}): Promise<Result> {
  const proc = runCamfleet([...args, ...(opts.server === false ? [] : ["--server", nats.url])], { env: { LOG_LEVEL: "info", ...opts.env }, onCleanup: (fn) => void teardown.push(fn) });
  const exit = await proc.exited;
  return { code: exit.code, stdout: stdoutOf(proc), stderr: proc.stderr(), proc };
}

function stdoutOf(proc: CamfleetProcess): string {
  return proc.lines.map((l) => ("raw" in l ? String(l.raw) : JSON.stringify(l))).join("\n");
}

/** Dotted keys of a JSON value's leaves, as the human forms name them. */
function leafKeys(value: unknown, prefix = ""): string[] {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length > 0) {
    return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => leafKeys(v, prefix === "" ? k : `${prefix}.${k}`));
  }
  return [prefix];
}

describe("camera add|start --wait", () => {
  test("waits through CONNECTING to STREAMING and exits 0; --json has the spec and the status", async () => {
    const r = await camfleet(["camera", "add", "w-ok", "testsrc:?size=160x120&rate=10", "--wait", "--wait-timeout", "30s", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { camera: { id: string }; status: { state: string; node: string } };
    expect(out.camera.id).toBe("w-ok");
    expect(out.status).toMatchObject({ state: "STREAMING", node: "n1" });
    // Off a terminal the progress is one line per change, on stderr.
    expect(r.stderr).toMatch(/camera w-ok: STREAMING \S+ 160x120 @10fps on n1/);
  }, 60_000);

  test("a camera in ERROR: the code and its retry countdown, exit 3", async () => {
    const port = await reservePort(); // nobody listens there: connection refused
    const r = await camfleet(["camera", "add", "w-bad", `rtsp://127.0.0.1:${port}/x`, "--wait", "--wait-timeout", "5s"]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/camera w-bad: ERROR SOURCE_UNREACHABLE: .* on n1, retry \d+ in \d+\.\ds \(gave up waiting after 5s\)/);
    expect(r.stdout).toContain("camera w-bad saved (enabled)");
  }, 60_000);

  test("start --wait of a stopped camera; --wait with --disabled and a bad --wait-timeout are usage errors (exit 2, nothing sent)", async () => {
    expect((await camfleet(["camera", "add", "w-start", "testsrc:?size=160x120&rate=10", "--disabled"])).code).toBe(0);
    const r = await camfleet(["camera", "start", "w-start", "--wait"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/camera w-start enabled\ncamera w-start: STREAMING/);

    const both = await camfleet(["camera", "add", "w-never", "testsrc:", "--disabled", "--wait"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("INVALID_ARGUMENT");
    const bad = await camfleet(["camera", "add", "w-never", "testsrc:", "--wait", "--wait-timeout", "soon"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--wait-timeout must be a duration");
    expect((await camfleet(["camera", "get", "w-never"])).stderr).toContain("NOT_FOUND");
  }, 60_000);
});

describe("camera get, status, edit", () => {
  beforeAll(async () => {
    const r = await camfleet(["camera", "add", "c1", "testsrc:?size=160x120&rate=10", "--name", "Door", "--wait"]);
    expect(r.code, r.stderr).toBe(0);
  }, 60_000);

  test("get and status: the human form shows every field of the --json form", async () => {
    for (const cmd of ["get", "status"]) {
      const [human, json] = await Promise.all([camfleet(["camera", cmd, "c1"]), camfleet(["camera", cmd, "c1", "--json"])]);
      expect(human.code, human.stderr).toBe(0);
      expect(json.code, json.stderr).toBe(0);
      const value = JSON.parse(json.stdout) as Record<string, unknown>;
      for (const key of leafKeys(value)) expect(human.stdout, `${cmd}: ${key}`).toMatch(new RegExp(`^${key.replaceAll(".", "\\.")}\\s`, "m"));
      if (cmd === "get") {
        expect(value).toMatchObject({ camera: { id: "c1", name: "Door" }, lease: { node: "n1" } });
        expect(human.stdout).toMatch(/^lease\.node\s+n1$/m);
      } else {
        expect(value).toMatchObject({ camera: "c1", state: "STREAMING", node: "n1" });
        expect(human.stdout).toMatch(/^state\s+STREAMING$/m);
      }
    }
  }, 60_000);

  test("edit --set changes dotted fields, checked by the camera schema; bad input names the problem and changes nothing", async () => {
    const before = JSON.parse((await camfleet(["camera", "get", "c1", "--json"])).stdout) as { revision: number };
    const ok = await camfleet(["camera", "edit", "c1", "--set", "ai.max_fps=3", "--set", "name=Front door", "--json"]);
    expect(ok.code, ok.stderr).toBe(0);
    const saved = JSON.parse(ok.stdout) as { camera: { name: string; ai: { max_fps: number } }; revision: number };
    expect(saved.camera).toMatchObject({ name: "Front door", ai: { max_fps: 3 } });
    expect(saved.revision).toBeGreaterThan(before.revision);

    const cases: Array<[string[], number, RegExp]> = [
      [["--set", "ai.max_fps=999"], 1, /INVALID_ARGUMENT: invalid camera spec: ai\.max_fps/],
      [["--set", "nosuch=1"], 1, /INVALID_ARGUMENT: invalid camera spec: .*nosuch/],
      [["--set", "name.first=x"], 1, /INVALID_ARGUMENT: --set name\.first: name is not an object/],
      [["--set", "ai.max_fps"], 2, /INVALID_ARGUMENT: --set wants key=value/],
      [["--set", "id=other"], 2, /INVALID_ARGUMENT: --set id: a camera's id cannot change/],
    ];
    const results = await Promise.all(cases.map(([args]) => camfleet(["camera", "edit", "c1", ...args])));
    results.forEach((r, i) => {
      expect(r.code, `${cases[i]![0].join(" ")}: ${r.stderr}`).toBe(cases[i]![1]);
      expect(r.stderr).toMatch(cases[i]![2]);
    });
    const after = JSON.parse((await camfleet(["camera", "get", "c1", "--json"])).stdout) as { revision: number };
    expect(after.revision).toBe(saved.revision);
    expect((await camfleet(["camera", "edit", "nope", "--set", "name=x"])).stderr).toContain("NOT_FOUND");
  }, 180_000);

  test("ls: a table whose rows start with the id; rm --json", async () => {
    const ls = await camfleet(["camera", "ls"]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/^ID\s+ENABLED\s+OWNER\s+STATE\s+URL$/m);
    expect(ls.stdout).toMatch(/^c1\s+true\s+n1\s+STREAMING\s+testsrc:/m);
    const rm = await camfleet(["camera", "rm", "w-bad", "--json"]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(JSON.parse(rm.stdout)).toEqual({ id: "w-bad", deleted: true });
  }, 60_000);
});

describe("events --human, nodes --watch", () => {
  test("events --human: one readable line per status event", async () => {
    const r = await camfleet(["events", "--human", "--camera", "c1", "--type", "status", "--since", "all", "--no-follow"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3}  status\s+c1  CONNECTING  n1  epoch \d+/m);
    expect(r.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3}  status\s+c1  STREAMING  n1  epoch \d+  \S+ 160x120 @10fps/m);
    expect(r.stdout).not.toContain("{");
  }, 60_000);

  test("nodes: the table, and --watch --json refreshes until SIGINT", async () => {
    const table = await camfleet(["nodes"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^NODE\s+CAMERAS\s+CAPACITY\s+STATE\s+VERSION\s+UP SINCE\s+CPU %\s+RSS MB$/m);
    expect(table.stdout).toMatch(/^n1\s+\d+\s+32\s+active\s/m);

    const watch = runCamfleet(["nodes", "--watch", "--interval", "200ms", "--json", "-s", nats.url], { onCleanup: (fn) => void teardown.push(fn) });
    await waitFor(() => watch.lines.filter((l) => Array.isArray(l)).length >= 3, { timeoutMs: 20_000, message: `three refreshes\n${watch.stderr()}` });
    for (const snapshot of watch.lines.filter((l) => Array.isArray(l)) as unknown as Array<Array<{ node: string }>>) expect(snapshot.map((n) => n.node)).toEqual(["n1"]);
    watch.child.kill("SIGINT");
    expect((await watch.exited).code).toBe(0);
  }, 60_000);
});

describe("NATS flags and usage errors", () => {
  test("--timeout, --server, --context on a command; a bad --timeout exits 2, an unreachable server 1", async () => {
    const bad = await camfleet(["camera", "get", "c1", "--timeout", "forever"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--timeout must be a duration");
    const gone = await camfleet(["camera", "get", "c1", "-s", "nats://127.0.0.1:1", "--timeout", "500ms"], { server: false });
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("cannot reach NATS at nats://127.0.0.1:1");
    const noContext = await camfleet(["node", "drain", "n1", "--context", "no-such-context"], { server: false, env: { XDG_CONFIG_HOME: "/nonexistent" } });
    expect(noContext.code).toBe(78);
    expect(noContext.stderr).toContain("no-such-context");
  }, 60_000);
});

describe("completion", () => {
  test("bash: completes commands, subcommands and the options of the command typed", async () => {
    const script = (await camfleet(["completion", "bash"], { server: false })).stdout;
    const complete = async (...words: string[]) => {
      const { stdout } = await run("bash", [
        "-c",
        `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _camfleet; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ]);
      return stdout.trim().split("\n").sort();
    };
    expect(await complete("camfleet", "cam")).toEqual(["camera"]);
    expect(await complete("camfleet", "camera", "")).toEqual(expect.arrayContaining(["add", "get", "edit", "status", "start", "stop", "rm", "ls"]));
    expect(await complete("camfleet", "camera", "edit", "c1", "--s")).toEqual(["--server", "--set"]);
    expect(await complete("camfleet", "node", "dr")).toEqual(["drain"]);
    expect(await complete("camfleet", "nodes", "--w")).toEqual(["--watch"]);
  }, 60_000);

  test("zsh: the script loads, and offers what the words typed so far lead to", async () => {
    const script = (await camfleet(["completion", "zsh"], { server: false })).stdout;
    expect(script.split("\n")[0]).toBe("#compdef camfleet");
    // compsys needs a live line editor: _describe and compdef are stood in for, to see what the script hands them.
    const offer = async (...words: string[]) => {
      const { stdout } = await run("zsh", [
        "-fc",
        `compdef() { :; }\n_describe() { local arr=\${@[-1]}; print -l -- \${(P)arr}; }\n_files() { :; }\n${script}\nwords=(${words.map((w) => `'${w}'`).join(" ")}); CURRENT=${words.length}; _camfleet`,
      ]);
      return stdout.trim().split("\n").map((l) => l.split(":")[0]);
    };
    expect(await offer("camfleet", "camera", "")).toEqual(expect.arrayContaining(["add", "get", "edit", "status"]));
    expect(await offer("camfleet", "camera", "status", "c1", "--")).toEqual(expect.arrayContaining(["--json", "--server", "--creds", "--context", "--timeout"]));
    const unknown = await camfleet(["completion", "fish"], { server: false });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("shell must be bash or zsh");
  }, 60_000);
});

describe("node drain", () => {
  test("a live node drains (its cameras released); an unknown one is NOT_FOUND", async () => {
    const unknown = await camfleet(["node", "drain", "nobody"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("NOT_FOUND: no live node nobody");
    const r = await camfleet(["node", "drain", "n1", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { node: string; released: number };
    expect(out.node).toBe("n1");
    expect(out.released).toBeGreaterThanOrEqual(1);
    const nodes = JSON.parse((await camfleet(["nodes", "--json"])).stdout) as Array<{ node: string; draining?: boolean }>;
    expect(nodes).toEqual([expect.objectContaining({ node: "n1", draining: true })]);
  }, 60_000);
});
