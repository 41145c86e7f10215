import { spawn, type ChildProcess, type IOType } from "node:child_process";
import { existsSync, constants as fsConstants } from "node:fs";
import { access } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { timedOut, withTimeout } from "../deadline.ts";

/**
 * How camfleet runs a helper process (nats-server, FFmpeg, test servers):
 * arguments as an array, never a shell; under a parent-death signal, so it
 * dies with us even after kill -9; in its own process group, so a Ctrl-C in
 * the terminal reaches only us and we stop it in order; its stderr split into
 * lines and the last ones kept for error messages; its exit always observed.
 */

export type StdioSlot = IOType;

export interface ChildExit {
  /** Exit code, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SuperviseOptions {
  /** Default: process.env. Keep inherited variables: the test suite's leak check follows one. */
  env?: NodeJS.ProcessEnv;
  /** stdin, stdout and any extra fds (3, 4, …); stderr is always a pipe. Default ["ignore", "ignore"]. */
  stdio?: StdioSlot[];
  /** Each stderr line. */
  onStderrLine?: (line: string) => void;
  /** Lines of stderr kept for stderrTail(). Default 40. */
  tailLines?: number;
}

export interface SupervisedChild {
  readonly child: ChildProcess;
  /** Settles when the process has exited (or could not be spawned). */
  readonly exited: Promise<ChildExit>;
  /** Settles when stderr has ended. */
  readonly closed: Promise<void>;
  /** Why spawning failed, when it did. */
  spawnError?: Error;
  /** Set when we asked the process to go, so callers can tell a crash from a stop. */
  expected: boolean;
  /** True once the process has exited (or could not be spawned); its pid must not be signalled any more. */
  hasExited(): boolean;
  stderrTail(): string;
  /** Sends `signal` to the process's group (the process and whatever it started), unless it has exited. */
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM to the group, then SIGKILL after `timeoutMs`; resolves on exit. */
  terminate(timeoutMs: number): Promise<ChildExit>;
  /** SIGKILL to the group; resolves on exit. */
  kill(): Promise<ChildExit>;
}

/** setpriv (util-linux) gives the child a parent-death signal; without it, children outlive a kill -9 of ours. */
export const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));

/**
 * The command line that runs `command` under a parent-death signal. Without
 * setpriv there is none, and a helper (an FFmpeg per camera) would outlive a
 * killed node and keep its camera busy: that is refused, loudly, rather than
 * run without (util-linux is part of every Debian system; scripts/setup.sh
 * installs it otherwise).
 */
export function pdeathsigCommand(command: string, args: readonly string[], setpriv: string | null = SETPRIV ?? null): [string, string[]] {
  if (setpriv === null) {
    throw new Error(
      `cannot start ${command}: setpriv (Debian package util-linux) is missing, and without its parent-death signal ${command} would outlive this process if it were killed; install util-linux`,
    );
  }
  // The parent-death signal is tied to the forking thread: for child_process that is Node's main thread.
  return [setpriv, ["--pdeathsig", "KILL", "--", command, ...args]];
}

/** Starts `command` supervised as described above. Throws when it cannot be run under a parent-death signal (pdeathsigCommand). */
export function superviseSpawn(command: string, args: readonly string[], options: SuperviseOptions = {}): SupervisedChild {
  const [cmd, argv] = pdeathsigCommand(command, args);
  const [stdin = "ignore", stdout = "ignore", ...extra] = options.stdio ?? [];
  // detached: its own process group, so signals reach everything it started and a terminal's Ctrl-C reaches only us.
  const child: ChildProcess = spawn(cmd, argv, { env: options.env ?? process.env, stdio: [stdin, stdout, "pipe", ...extra], detached: true });

  const tail: string[] = [];
  const keep = options.tailLines ?? 40;
  let ended = false;
  let onExit!: (e: ChildExit) => void;
  const exited = new Promise<ChildExit>((resolve) => (onExit = resolve));
  let onClosed!: () => void;
  const closed = new Promise<void>((resolve) => (onClosed = resolve));

  const signal = (sig: NodeJS.Signals) => {
    const pid = child.pid;
    // After the exit the pid (and group id) may belong to someone else: never signal it then.
    if (ended || pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch {
      child.kill(sig);
    }
  };

  const supervised: SupervisedChild = {
    child,
    exited,
    closed,
    expected: false,
    hasExited: () => ended,
    stderrTail: () => tail.join("\n"),
    signal,
    async terminate(timeoutMs) {
      supervised.expected = true;
      if (ended) return exited;
      signal("SIGTERM");
      const exit = await withTimeout(exited, timeoutMs);
      if (exit !== timedOut) return exit;
      signal("SIGKILL");
      return exited;
    },
    async kill() {
      supervised.expected = true;
      signal("SIGKILL");
      return exited;
    },
  };

  const line = (text: string) => {
    tail.push(text);
    if (tail.length > keep) tail.shift();
    options.onStderrLine?.(text);
  };
  let partial = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    // \r too: FFmpeg ends its status lines with it.
    const lines = (partial + chunk).split(/\r\n|\n|\r/);
    partial = lines.pop() ?? "";
    for (const l of lines) line(l);
  });
  child.stderr?.on("close", () => {
    if (partial) line(partial);
    partial = "";
    onClosed();
  });
  // 'error' without 'exit' happens when the spawn itself fails (e.g. EACCES).
  child.once("error", (err) => {
    if (ended) return;
    ended = true;
    supervised.spawnError = err;
    onExit({ code: null, signal: null });
    onClosed();
  });
  child.once("exit", (code, sig) => {
    ended = true;
    onExit({ code, signal: sig });
  });
  return supervised;
}

export function describeExit(exit: ChildExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

export async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `name` on PATH, else the first executable fallback path. */
export async function findExecutable(name: string, fallbacks: readonly string[]): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  for (const path of [...dirs.map((d) => join(d, name)), ...fallbacks]) {
    if (await isExecutable(path)) return path;
  }
  return undefined;
}

