// Runs the real `camfleet` command (bin/camfleet, the launcher users run) as a child process and
// reads its JSON log lines, so tests drive the program the way a user does.

import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CONFIG_VARIABLES, superviseSpawn, withTimeout } from "../../runtime/index.ts";
import type { RegisterCleanup } from "./nats-harness.ts";

const BIN = fileURLToPath(new URL("../../bin/camfleet", import.meta.url));

export interface CamfleetProcess {
  child: ChildProcess;
  /** Every stdout line so far, parsed when it is JSON. */
  lines: Array<Record<string, unknown>>;
  stderr(): string;
  /** Resolves with the first log line (past or future) that matches; rejects at the deadline or if the process exits. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves when the process has exited and its stdout and stderr are read to the end. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves as `exited` does. */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * After the exit, how long the output pipes may take to deliver what is left.
 * Bounded: a grandchild that inherited a pipe must not hang a test.
 */
const OUTPUT_DRAIN_MS = 5_000;

/** The environment a test's camfleet gets: the runner's, less every camfleet and NATS setting a developer's shell may carry. */
export function testEnv(extra: Record<string, string | undefined> | undefined): NodeJS.ProcessEnv {
  // Inherit the rest: the suite's leak check follows a variable every child carries (CAMFLEET_TEST_RUN).
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const { name, alias } of CONFIG_VARIABLES) {
    delete env[name];
    if (alias !== undefined) delete env[alias];
  }
  for (const name of Object.keys(env)) if (name.startsWith("NATS_") || name.startsWith("MEDIAMTX_")) delete env[name];
  return { ...env, LOG_LEVEL: "debug", ...extra };
}

export function runCamfleet(args: string[], opts: { env?: Record<string, string | undefined>; onCleanup: RegisterCleanup }): CamfleetProcess {
  const env = testEnv(opts.env);
  // Supervised like every helper process: under a parent-death signal (a
  // killed test runner or benchmark leaves no node behind), in its own group.
  let stderr = "";
  const run = superviseSpawn(BIN, args, {
    env,
    stdio: ["ignore", "pipe"],
    tailLines: 0,
    onStderrLine: (line) => {
      stderr += `${line}\n`;
    },
  });
  const child = run.child;
  const lines: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let buf = "";
  let drained = false;
  const stdoutEnded = new Promise<void>((resolve) =>
    child.stdout!.once("close", () => {
      if (buf !== "") lines.push({ raw: buf }); // a last line without its newline
      buf = "";
      resolve();
    }),
  );
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        lines.push({ raw: text });
      }
      for (const w of waiters) w();
    }
  });
  // 'exit' can come before the last output is read: a test that reads lines or
  // stderr once the process is gone must see all of them.
  const exited = run.exited.then(async (exit) => {
    await withTimeout(Promise.all([stdoutEnded, run.closed]), OUTPUT_DRAIN_MS);
    drained = true;
    for (const w of waiters) w();
    return exit;
  });
  const stop = async (timeoutMs = 10_000) => {
    await run.terminate(timeoutMs);
    return exited;
  };
  opts.onCleanup(async () => {
    await stop(5_000);
  });

  const waitForLog = (match: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const found = lines.find(match);
        if (found !== undefined) return finish(() => resolve(found));
        if (drained) {
          return finish(() => reject(new Error(`camfleet exited (${child.exitCode ?? child.signalCode}) before the awaited log line\nstderr: ${stderr}\nstdout: ${JSON.stringify(lines.slice(-10))}`)));
        }
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`no matching log line within ${timeoutMs} ms\nstderr: ${stderr}\nlast lines: ${JSON.stringify(lines.slice(-10))}`))),
        timeoutMs,
      );
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        waiters.delete(check);
        settle();
      };
      waiters.add(check);
      check();
    });

  return { child, lines, stderr: () => stderr, waitForLog, exited, stop };
}

/** True while a process with this pid exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A zombie has exited; it only waits for its parent to reap it.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
