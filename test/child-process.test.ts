// How helper processes are started (runtime/infra/child-process.ts): always
// under a parent-death signal, and never without one.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it, onTestFinished } from "vitest";
import { pdeathsigCommand } from "../runtime/index.ts";
import { isAlive } from "./helpers/camfleet-process.ts";
import { waitFor } from "./helpers/wait.ts";

const RUNTIME = fileURLToPath(new URL("../runtime/index.ts", import.meta.url));

describe("parent-death signal", () => {
  it("wraps every helper in setpriv --pdeathsig KILL", () => {
    expect(pdeathsigCommand("ffmpeg", ["-i", "x"], "/usr/bin/setpriv")).toEqual(["/usr/bin/setpriv", ["--pdeathsig", "KILL", "--", "ffmpeg", "-i", "x"]]);
  });

  it("refuses to start a helper without setpriv, naming the package, instead of leaving orphans behind", () => {
    expect(() => pdeathsigCommand("ffmpeg", [], null)).toThrow(/cannot start ffmpeg: setpriv \(Debian package util-linux\) is missing/);
  });

  it("a helper dies with its parent, even after kill -9", async () => {
    // A parent process that starts `sleep` as camfleet starts FFmpeg, says its pid, and waits.
    const code = `import { superviseSpawn } from ${JSON.stringify(RUNTIME)}; const run = superviseSpawn("sleep", ["60"]); console.log(run.child.pid); setInterval(() => {}, 1000);`;
    const parent = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], { stdio: ["ignore", "pipe", "inherit"] });
    onTestFinished(() => void parent.kill("SIGKILL"));
    let out = "";
    parent.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    const pid = await waitFor(() => (/^\d+\n/.test(out) ? Number(out.trim()) : undefined), { timeoutMs: 15_000, message: "the helper's pid" });
    onTestFinished(() => void (isAlive(pid) && process.kill(pid, "SIGKILL")));
    expect(isAlive(pid)).toBe(true);
    parent.kill("SIGKILL");
    await waitFor(() => !isAlive(pid), { timeoutMs: 5_000, message: "the helper died with its parent" });
  });
});
