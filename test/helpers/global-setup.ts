// vitest globalSetup: fails the run when a process a test started outlives the suite.
//
// Setup marks this run: CAMFLEET_TEST_RUN=<random id> goes into process.env,
// which the pool's workers inherit, and so does every process they spawn
// (nats-server, ffmpeg, node children…) unless a test strips the environment.
// Teardown looks for live processes carrying the mark, kills them, and throws.
//
// Who is exempt: this process, and its direct children — the pool's workers and
// vite's helpers (e.g. the esbuild service). A process a test spawned is a
// grandchild of this process (its parent is a worker) or, once that worker is
// gone, an orphan under init; either way it is not a direct child. That only
// holds for process-based pools, hence the check in setup().

import { randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import type { TestProject } from "vitest/node";

const RUN_VAR = "CAMFLEET_TEST_RUN";
/** How long a process found at teardown may take to finish dying before it counts as a leak, ms. */
const LEAK_GRACE_MS = 3_000;

interface Leak {
  pid: number;
  cmdline: string;
}

export default function setup(project: TestProject): () => Promise<void> {
  const pool = project.config.pool;
  if (pool !== "forks" && pool !== "vmForks") {
    throw new Error(
      `test/helpers/global-setup.ts: the leaked-process check needs a process pool ("forks"), got "${pool}": ` +
        "with worker threads a test's children are direct children of vitest and look like its own",
    );
  }
  const runId = randomUUID();
  process.env[RUN_VAR] = runId;

  return async function teardown(): Promise<void> {
    const mark = `${RUN_VAR}=${runId}`;
    // A process killed by its parent-death signal as the last worker exited may
    // still be dying (not yet a zombie): give such processes a moment, then judge.
    let leaks = await findLeaks(mark);
    for (const deadline = Date.now() + LEAK_GRACE_MS; leaks.length > 0 && Date.now() < deadline; ) {
      await new Promise((res) => setTimeout(res, 100));
      leaks = await findLeaks(mark);
    }
    if (leaks.length === 0) return;
    for (const leak of leaks) {
      try {
        process.kill(leak.pid, "SIGKILL");
      } catch {
        // gone in the meantime; it was still a leak
      }
    }
    const list = leaks.map((l) => `  pid ${l.pid}: ${l.cmdline}`).join("\n");
    const message = `${leaks.length} process(es) started by tests were still running after the suite (killed now):\n${list}`;
    console.error(message);
    // vitest logs a teardown error; the exit code must say so too.
    process.exitCode = 1;
    throw new Error(message);
  };
}

async function findLeaks(mark: string): Promise<Leak[]> {
  const leaks: Leak[] = [];
  for (const entry of await readdir("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const stat = parseStat(await readFile(`/proc/${pid}/stat`, "utf8"));
      // Zombies have exited already; their parent just has not reaped them.
      if (!stat || stat.state === "Z" || stat.state === "X" || stat.ppid === process.pid) continue;
      const environ = (await readFile(`/proc/${pid}/environ`, "utf8")).split("\0");
      if (!environ.includes(mark)) continue;
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").filter(Boolean).join(" ");
      leaks.push({ pid, cmdline: cmdline || `[${stat.comm}]` });
    } catch {
      // exited while we looked, or not ours to read: not a leak of this run
    }
  }
  return leaks;
}

/** /proc/<pid>/stat: "pid (comm) state ppid …"; comm may itself contain spaces and parentheses. */
function parseStat(text: string): { comm: string; state: string; ppid: number } | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  const [state, ppid] = text.slice(close + 2).split(" ");
  if (state === undefined || ppid === undefined) return undefined;
  return { comm: text.slice(open + 1, close), state, ppid: Number(ppid) };
}
