// The responding side of every baseline row of bench/control-rpc.ts, run as ONE
// process of its own so that each row of that benchmark has the same topology
// as camfleet's: the caller in the bench process, the responder in another
// process (camfleet's is a `camfleet node`).
//
//   node --import tsx bench/control-rpc-responders.ts <nats-url>
//
// On one v3 connection it serves the floor's ping-pong (PING in, PONG out),
// the echo for nc.request() and the trivial cameraStatus responder for the
// ControlClient-alone row; a Moleculer broker (v2 `nats` client, via its NATS
// transporter) serves the `camera.status` action. Once all are subscribed it
// prints READY_LINE on stdout. It stops on SIGTERM/SIGINT, and on the end of
// its stdin, so that it does not outlive a bench that was killed.
//
// bench/control-rpc.ts imports the constants below; the serving code runs only
// when this file is the process's entry point.

import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { ServiceBroker } from "moleculer";
import { type CameraStatus, subjects } from "../subjects/index.ts";

// Bench-only subjects of the baseline rows; not camfleet's, so not in subjects/.
export const PING = "bench.ping";
export const PONG = "bench.pong";
export const ECHO = "bench.echo";
/** Not a camera any node runs: only the trivial responder answers its status subject. */
export const STUB_CAMERA = "bench-stub";
/** Moleculer: the serving broker's node id and the service whose `status` action is called. */
export const MOLECULER_SERVING_NODE = "bench-svc";
export const MOLECULER_SERVICE = "camera";
export const READY_LINE = "responders ready";

/** A CameraStatus-shaped reply, the same for every responder of this process. */
export const STATUS: CameraStatus = {
  camera: STUB_CAMERA,
  node: "bench-stub-node",
  epoch: 1,
  state: "STREAMING",
  since_ts: Date.now(),
  stream: { codec: "h264", width: 1280, height: 720, fps: 25 },
  last_frame_ts: Date.now(),
  frames: { received: 1000, sent_ai: 40, skipped_motion: 12, detections: 3 },
  publishing: true,
  viewers: 0,
};
export const STATUS_REPLY = JSON.stringify({ ok: true, ...STATUS });

/** Moleculer options shared by the serving broker here and the calling one in the bench. */
export function moleculerOptions(url: string) {
  return {
    transporter: { type: "NATS", options: { url } },
    logger: false,
    requestTimeout: 5000,
    // Signals are ours to handle: Moleculer's own handler would exit(0) in the middle of our shutdown.
    skipProcessEventRegistration: true,
  } as const;
}

async function serve(url: string): Promise<void> {
  const nc = await connect({ servers: url, name: "bench-responders" });
  const broker = new ServiceBroker({ ...moleculerOptions(url), nodeID: MOLECULER_SERVING_NODE });

  let stopping = false;
  const stop = async (why: string, code: number) => {
    if (stopping) return;
    stopping = true;
    if (code !== 0) console.error(`responders: ${why}`);
    await Promise.allSettled([broker.stop(), nc.close()]);
    process.exit(code);
  };
  process.once("SIGTERM", () => void stop("SIGTERM", 0));
  process.once("SIGINT", () => void stop("SIGINT", 0));
  // The bench holds our stdin open; its end means the bench is gone.
  process.stdin.once("end", () => void stop("stdin closed", 0));
  process.stdin.resume();
  void nc.closed().then((err) => stop(`NATS connection closed${err ? `: ${err.message}` : ""}`, 1));

  // 1. The floor: a ping on PING is answered with a publish on PONG.
  nc.subscribe(PING, { callback: () => nc.publish(PONG, STATUS_REPLY) });
  // 2. nc.request() echo.
  nc.subscribe(ECHO, {
    callback: (_err, m) => {
      m.respond(STATUS_REPLY);
    },
  });
  // 5. The trivial responder of the ControlClient-alone row.
  nc.subscribe(subjects.ctl.cameraStatus(STUB_CAMERA), {
    callback: (_err, m) => {
      m.respond(STATUS_REPLY);
    },
  });
  // 3. Moleculer.
  broker.createService({ name: MOLECULER_SERVICE, actions: { status: () => STATUS } });
  await broker.start();
  await nc.flush();
  process.stdout.write(`${READY_LINE}\n`);
}

function isEntryPoint(): boolean {
  const argv1 = process.argv[1];
  if (argv1 === undefined) return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const url = process.argv[2];
  if (url === undefined) {
    console.error("usage: node --import tsx bench/control-rpc-responders.ts <nats-url>");
    process.exit(2);
  }
  try {
    await serve(url);
  } catch (err) {
    console.error(`responders: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
