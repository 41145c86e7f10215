// A real RTSP camera for tests and benchmarks: GStreamer's RTSP server
// (test/fixtures/rtsp-server.py) on 127.0.0.1, serving test patterns.
//
//   const cam = await startRtspCamera({
//     onCleanup: onTestFinished,
//     mounts: [{ path: "/door", width: 1280, height: 720, fps: 25 }],
//     credentials: { user: "admin", password: "secret" },
//   });
//   cam.url("/door", { withCredentials: true }); // rtsp://admin:secret@127.0.0.1:PORT/door
//
// Teardown follows test/helpers/nats-harness.ts: the stop is registered with
// `onCleanup` before anything is spawned, and a failed start leaves no process.
// The server runs under `setpriv --pdeathsig KILL` (it dies with this process,
// even on SIGKILL), in its own process group (a terminal's Ctrl-C reaches only
// the parent), with the inherited environment (the suite's leak check follows a
// variable every child inherits).
//
// Needs Debian's /usr/bin/python3 with python3-gi and gir1.2-gst-rtsp-server-1.0
// (scripts/setup.sh installs them).

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describeExit, superviseSpawn, withTimeout, type ChildExit, type SupervisedChild } from "../../runtime/index.ts";
import type { RegisterCleanup } from "./nats-harness.ts";
import { reservePort } from "./ports.ts";

const SERVER_SCRIPT = fileURLToPath(new URL("../fixtures/rtsp-server.py", import.meta.url));
const DEFAULT_PYTHON = "/usr/bin/python3";
const HOST = "127.0.0.1";
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const STDERR_TAIL_LINES = 60;
const MESSAGE_TAIL_LINES = 15;
/** Bound on waiting for stderr to drain after exit, so a start error carries the server's last words. */
const STDERR_DRAIN_MS = 1_000;

export interface RtspCredentials {
  user: string;
  password: string;
}

/** One stream the camera serves. Defaults are the server's: see test/fixtures/rtsp-server.py. */
export interface RtspMount {
  /** "/name". */
  path: string;
  /** Pixels. Default 640 × 360. */
  width?: number;
  height?: number;
  /** Frames per second. Default 15. */
  fps?: number;
  /** Target bitrate in kbit/s for h264/h265. Default 1000. Ignored by mjpeg and by static mounts. */
  bitrate?: number;
  /**
   * A GStreamer videotestsrc pattern. Default "ball" (a small moving ball on
   * black; encodes to ~150 kbit/s whatever the bitrate). "snow" reaches the
   * bitrate; "smpte" is not still (it has a patch of noise).
   */
  pattern?: string;
  /** A still picture: one frame of the pattern, repeated; every decoded frame is bit-identical. Default false. */
  static?: boolean;
  /**
   * Rate control of a static mount. Default "qp": a constant quantiser, every
   * decoded frame bit-identical. "bitrate": encoded at `bitrate`, as a real
   * camera filming a still scene is: the encoder keeps refining the picture
   * and every key frame resets it, so decoded frames differ by noise.
   */
  rateControl?: "qp" | "bitrate";
  /** Default "h264". "h265" and "mjpeg" are the "not H.264" cameras. */
  codec?: "h264" | "h265" | "mjpeg";
  /** H.264 profile. Default "constrained-baseline". */
  profile?: "constrained-baseline" | "baseline" | "main" | "high";
  /** Frames between key frames. Default fps × 2. */
  keyInt?: number;
  /** JPEG quality 1..100 for mjpeg. Default 85. */
  quality?: number;
  /** Basic-auth credentials for this mount. Default: the camera's `credentials`; null: open even when those are set. */
  credentials?: RtspCredentials | null;
  /** One encoding for all clients. Default: the camera's `shared`. */
  shared?: boolean;
}

export interface StartRtspCameraOptions {
  onCleanup: RegisterCleanup;
  /** Default: one mount, "/cam", with the server's defaults. */
  mounts?: RtspMount[];
  /** Basic-auth credentials every mount requires unless it says otherwise. Default: none (open). */
  credentials?: RtspCredentials;
  /**
   * Serve one encoding to all clients of a mount instead of one per client.
   * Default false. Cheap for benchmarks feeding many cameras from one stream.
   */
  shared?: boolean;
  /**
   * TCP port on 127.0.0.1. Default: one from reservePort(), kept by restart().
   * Not the kernel's choice: while a camera is down between kill and restart its
   * clients keep dialling the port, and one in the ephemeral range could be
   * taken meanwhile (by another socket, or by a client that connects to itself).
   */
  port?: number;
  /** Milliseconds start() waits for the server's READY line. Default 10000. */
  readyTimeoutMs?: number;
  /** Each line the server writes to stderr (its log). Default: dropped (the tail stays in `stderrTail()`). */
  onLog?: (line: string) => void;
  /** Called when the server exits without stop(), kill() or restart() asking it to. */
  onExit?: (exit: RtspCameraExit) => void;
  /** Path of the Python interpreter. Default /usr/bin/python3 (Debian's: python3-gi lives there). */
  python?: string;
}

export type RtspCameraExit = ChildExit;

export interface UrlOptions {
  /** Put the mount's credentials into the URL. Default false. */
  withCredentials?: boolean;
  /** Put these credentials into the URL instead (e.g. a wrong password). */
  credentials?: RtspCredentials;
}

export interface RtspCamera {
  /** The port on 127.0.0.1; the same after restart(). */
  readonly port: number;
  /** pid of the server while it runs (setpriv execs it, so it is python itself). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** rtsp://127.0.0.1:PORT/path. `path` defaults to the first mount's. Credentials are percent-encoded. */
  url(path?: string, opts?: UrlOptions): string;
  /** SIGTERM, then SIGKILL after `timeoutMs` (default 5000). Resolves with how it exited; undefined if it was not running. */
  stop(opts?: { timeoutMs?: number }): Promise<RtspCameraExit | undefined>;
  /** SIGKILL, like a camera losing power. Resolves once it has exited. */
  kill(): Promise<RtspCameraExit | undefined>;
  /** stop() if running, then start again on the same port with the same mounts. */
  restart(opts?: { timeoutMs?: number }): Promise<void>;
  /** The last lines of the server's stderr, of the current or most recent run. */
  stderrTail(): string;
}

/** The server exited, printed no READY line in time, or could not be spawned. No process is left behind. */
export class RtspCameraStartError extends Error {
  override name = "RtspCameraStartError";
  /** The last lines the server wrote to stderr; usually says why. */
  readonly stderr: string;
  /** Exit code when the server exited on its own (1: cannot listen, 2: bad mount, 3: GStreamer or a plugin missing). */
  readonly exitCode?: number | null;
  readonly signal?: NodeJS.Signals | null;

  constructor(reason: string, fields: { stderr: string; exitCode?: number | null; signal?: NodeJS.Signals | null; cause?: unknown }) {
    const tail = fields.stderr.trim().split("\n").slice(-MESSAGE_TAIL_LINES).join("\n");
    super(
      `RTSP camera failed to start: ${reason}` + (tail ? `\n--- stderr (tail) ---\n${tail}` : ""),
      fields.cause === undefined ? undefined : { cause: fields.cause },
    );
    this.stderr = fields.stderr;
    this.exitCode = fields.exitCode;
    this.signal = fields.signal;
  }
}

type Run = SupervisedChild;

/** Starts the camera and resolves once it accepts connections. */
export async function startRtspCamera(opts: StartRtspCameraOptions): Promise<RtspCamera> {
  const mounts = opts.mounts ?? [{ path: "/cam" }];
  if (mounts.length === 0) throw new TypeError("startRtspCamera: mounts must not be empty");
  const byPath = new Map<string, RtspMount>();
  for (const m of mounts) {
    if (!/^\/[^\s?#]+$/.test(m.path)) throw new TypeError(`startRtspCamera: mount path must look like /name, got ${JSON.stringify(m.path)}`);
    if (byPath.has(m.path)) throw new TypeError(`startRtspCamera: mount path ${m.path} is given twice`);
    byPath.set(m.path, m);
  }
  const credentialsOf = (m: RtspMount): RtspCredentials | undefined =>
    m.credentials === null ? undefined : (m.credentials ?? opts.credentials);
  const specs = mounts.map((m) => mountSpec(m, credentialsOf(m), opts.shared ?? false));
  const python = opts.python ?? DEFAULT_PYTHON;

  let port = opts.port ?? (await reservePort());
  let current: Run | undefined;
  let lastRun: Run | undefined;
  const stderrTail = () => lastRun?.stderrTail() ?? "";

  const start = async (): Promise<void> => {
    if (current) throw new Error("RTSP camera is already running");
    if (!existsSync(python)) {
      throw new RtspCameraStartError(`no ${python}; run scripts/setup.sh (Debian's python3 with python3-gi is needed)`, { stderr: "" });
    }
    const args = [SERVER_SCRIPT, "--port", String(port), ...specs.flatMap((s) => ["--mount", JSON.stringify(s)])];
    const run = superviseSpawn(python, args, {
      stdio: ["ignore", "pipe"],
      tailLines: STDERR_TAIL_LINES,
      ...(opts.onLog !== undefined ? { onStderrLine: opts.onLog } : {}),
    });
    current = run;
    lastRun = run;
    void run.exited.then((exit) => {
      if (current === run) current = undefined;
      if (!run.expected) opts.onExit?.(exit);
    });
    const readyTimeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    try {
      const url = await waitForReady(run, readyTimeoutMs);
      port = Number(new URL(url).port);
    } catch (err) {
      await run.kill();
      await withTimeout(run.closed, STDERR_DRAIN_MS);
      if (err instanceof NotReady) {
        throw new RtspCameraStartError(err.message, {
          stderr: stderrTail(),
          exitCode: err.exit?.code,
          signal: err.exit?.signal,
          cause: run.spawnError,
        });
      }
      throw new RtspCameraStartError("unexpected error while waiting for READY", { stderr: stderrTail(), cause: err });
    }
  };

  const stop = async (o: { timeoutMs?: number } = {}): Promise<RtspCameraExit | undefined> => {
    const run = current;
    if (!run) return undefined;
    const exit = await run.terminate(o.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
    await withTimeout(run.closed, STDERR_DRAIN_MS); // so stderrTail() has its last words
    return exit;
  };

  const kill = async (): Promise<RtspCameraExit | undefined> => {
    const run = current;
    if (!run) return undefined;
    const exit = await run.kill();
    await withTimeout(run.closed, STDERR_DRAIN_MS);
    return exit;
  };

  // Registered before the first spawn: a failed start or a failed assert still stops the server.
  opts.onCleanup(async () => {
    await stop();
  });

  await start();

  return {
    get port() {
      return port;
    },
    get pid() {
      return current?.child.pid;
    },
    get running() {
      return current !== undefined;
    },
    url(path?: string, o: UrlOptions = {}) {
      const mount = path === undefined ? mounts[0]! : byPath.get(path);
      if (!mount) throw new TypeError(`RTSP camera has no mount ${path}; it has ${[...byPath.keys()].join(", ")}`);
      const creds = o.credentials ?? (o.withCredentials ? credentialsOf(mount) : undefined);
      if (o.withCredentials && !creds) throw new TypeError(`RTSP camera mount ${mount.path} has no credentials`);
      const userinfo = creds ? `${encodeURIComponent(creds.user)}:${encodeURIComponent(creds.password)}@` : "";
      return `rtsp://${userinfo}${HOST}:${port}${mount.path}`;
    },
    stop,
    kill,
    async restart(o) {
      await stop(o);
      await start();
    },
    stderrTail,
  };
}

/** The server's JSON form of a mount (snake_case, credentials as "user:password"). */
function mountSpec(m: RtspMount, creds: RtspCredentials | undefined, sharedDefault: boolean): Record<string, unknown> {
  if (creds && (creds.user === "" || creds.user.includes(":"))) {
    throw new TypeError(`startRtspCamera: mount ${m.path}: a basic-auth user name must be non-empty and without ":"`);
  }
  const spec: Record<string, unknown> = {
    path: m.path,
    width: m.width,
    height: m.height,
    fps: m.fps,
    bitrate: m.bitrate,
    pattern: m.pattern,
    static: m.static,
    rate_control: m.rateControl,
    codec: m.codec,
    profile: m.profile,
    key_int: m.keyInt,
    quality: m.quality,
    auth: creds ? `${creds.user}:${creds.password}` : undefined,
    shared: m.shared ?? sharedDefault,
  };
  for (const key of Object.keys(spec)) if (spec[key] === undefined) delete spec[key];
  return spec;
}

class NotReady extends Error {
  constructor(
    message: string,
    readonly exit?: RtspCameraExit,
  ) {
    super(message);
  }
}

/** Resolves with the URL from the server's `READY rtsp://…` line; rejects with NotReady on exit or at the deadline. */
function waitForReady(run: Run, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdout = run.child.stdout!;
    let buf = "";
    const timer = setTimeout(() => finish(() => reject(new NotReady(`no READY line within ${timeoutMs} ms`))), timeoutMs);
    const onData = (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        const m = /^READY (rtsp:\/\/\S+)$/.exec(line);
        if (m) return finish(() => resolve(m[1]!));
      }
    };
    const onExit = (exit: RtspCameraExit) =>
      finish(() => {
        const why = run.spawnError
          ? `could not be spawned (${run.spawnError.message})`
          : `exited before it was ready (${describeExit(exit)})`;
        reject(new NotReady(why, exit));
      });
    let done = false;
    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stdout.off("data", onData);
      // Keep draining stdout so the server never blocks on a full pipe.
      stdout.resume();
      settle();
    };
    stdout.setEncoding("utf8");
    stdout.on("data", onData);
    void run.exited.then(onExit);
  });
}

