// The fleet the fault schedule runs against: a 3-server NATS cluster, camera
// nodes (real `camfleet node` processes running FFmpeg), one RTSP server with
// a mount per camera, and the reference detector. Every node reaches NATS
// through its own TCP proxies (one per server), so a test can cut one node off
// without touching the servers; the cluster does not advertise its members,
// so a node can never bypass its proxies by learning a server's own address.
//
// Shared by test/faults/faults.test.ts and bench/soak.ts: no vitest here.
// Everything started registers its teardown with `onCleanup` first.

import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ControlClient, ensureJetStream, LOG_MESSAGES } from "../../../runtime/index.ts";
import { BUCKETS, type CameraSpecInput } from "../../../subjects/index.ts";
import { runCamfleet, type CamfleetProcess } from "../camfleet-process.ts";
import { connectTestClient, openLeases, startFleetNode, type FleetNodeProcess } from "../fleet.ts";
import { startNatsCluster, type NatsClusterHandle, type RegisterCleanup } from "../nats-harness.ts";
import { reservePort } from "../ports.ts";
import { startRtspCamera, type RtspCamera } from "../rtsp-camera.ts";
import { startTcpProxy, type TcpProxy } from "./proxy.ts";

/**
 * Revisions the test's leases bucket keeps per camera. Nodes create the bucket
 * with history 1 (only the current value matters to them); the rig creates it
 * first with more, so the invariant checks can read who held each camera when.
 * At a renewal every TTL/4 (750 ms), 64 revisions cover ~48 s: the checks read
 * the history after every fault, well inside that.
 */
export const LEASE_HISTORY = 64;

export interface RigNode extends FleetNodeProcess {
  /** One proxy per cluster server, in server order; NATS_URL lists them all. */
  proxies: TcpProxy[];
}

export interface RigOptions {
  onCleanup: RegisterCleanup;
  /** Cameras. Default 4. */
  cameras?: number;
  /** Nodes at the start. Default 3. */
  nodes?: number;
  /** Extra environment of every node. */
  nodeEnv?: Record<string, string>;
}

export interface Rig {
  cluster: NatsClusterHandle;
  /** The test's own client, connected to the servers directly (not through a proxy). */
  nc: NatsConnection;
  control: ControlClient;
  leases: KV;
  rtsp: RtspCamera;
  cameras: string[];
  /** Every node started so far, dead ones included (their logs tell the ownership story). */
  nodes: RigNode[];
  /** Nodes whose process runs. */
  live(): RigNode[];
  /** Starts one more node (ids node1, node2, …). */
  addNode(): Promise<RigNode>;
  detector: { readonly proc: CamfleetProcess | undefined; endpoint: string; start(): Promise<void>; kill(): Promise<void> };
  /** Every nats-server pid the rig has had, restarted and killed ones included, for the leak check at the end. */
  serverPids(): number[];
  noteServerPids(): void;
  specOf(camera: string): CameraSpecInput;
  /** Date.now() just before the cameras were put (the start's reference). */
  camerasPutAt: number;
}

/** Frame size and rate of the test cameras: small, so 4 of them fit a loaded 2-core machine. */
const MOUNT = { width: 320, height: 240, fps: 10, keyInt: 10 } as const;

export async function startRig(opts: RigOptions): Promise<Rig> {
  const { onCleanup } = opts;
  const cameras = Array.from({ length: opts.cameras ?? 4 }, (_, i) => `fc${i + 1}`);
  const cluster = await startNatsCluster({ onCleanup, noAdvertise: true });
  const pids = new Set<number>();
  const noteServerPids = () => cluster.servers.forEach((s) => s.pid !== undefined && pids.add(s.pid));
  noteServerPids();

  const nc = await connectTestClient(cluster.urls, onCleanup);
  // Before any node: the leases bucket with a history the checks can read (see LEASE_HISTORY),
  // then everything else as a node would create it. Three replicas: the servers do not
  // advertise each other, so a node would not learn the cluster size by itself.
  await new Kvm(nc).create(BUCKETS.leases, { history: LEASE_HISTORY, replicas: 3 });
  await ensureJetStream(nc, { replicas: 3 });
  const leases = await openLeases(nc);
  const control = new ControlClient(nc);
  onCleanup(async () => control.close());

  let detectorProc: CamfleetProcess | undefined;
  const detectorPort = await reservePort(); // named up front: the detector comes back on it
  const detector = {
    get proc() {
      return detectorProc;
    },
    endpoint: `127.0.0.1:${detectorPort}`,
    async start() {
      const proc = runCamfleet(["detector"], { env: { DETECTOR_LISTEN: `127.0.0.1:${detectorPort}`, NODE_ID: "detector", LOG_LEVEL: "info" }, onCleanup });
      detectorProc = proc;
      // 40 s: a `camfleet` start on a loaded 2-core machine has taken more than 20.
      await proc.waitForLog((l) => l.msg === LOG_MESSAGES.detectorListening, 40_000);
    },
    async kill() {
      const proc = detectorProc;
      if (proc === undefined) return;
      proc.child.kill("SIGKILL");
      await proc.exited;
      detectorProc = undefined;
    },
  };
  await detector.start();

  const rtsp = await startRtspCamera({ onCleanup, mounts: cameras.map((id) => ({ path: `/${id}`, ...MOUNT })) });

  const nodes: RigNode[] = [];
  let nextNode = 1;
  const addNode = async (): Promise<RigNode> => {
    const id = `node${nextNode++}`;
    const proxies = await Promise.all(cluster.servers.map((s) => startTcpProxy(s.port, onCleanup)));
    const proc = await startFleetNode({
      id,
      natsUrls: proxies.map((p) => p.url),
      env: {
        CAMFLEET_ACTOR_KIND: "camera",
        AI_ENDPOINT: detector.endpoint,
        CAMFLEET_REPLICAS: "3",
        // info, not the sim default debug: debug logs every FFmpeg stderr line.
        LOG_LEVEL: "info",
        ...opts.nodeEnv,
      },
      onCleanup,
    });
    // A node gone (killed, drained and stopped) needs its proxies no more: closed, so the harness holds no fds for the dead.
    void proc.proc.exited.then(() => Promise.all(proxies.map((p) => p.close())));
    const node: RigNode = { ...proc, proxies };
    nodes.push(node);
    return node;
  };
  for (let i = 0; i < (opts.nodes ?? 3); i++) await addNode();

  const specOf = (id: string): CameraSpecInput => ({
    id,
    url: rtsp.url(`/${id}`),
    publish: "off",
    solutions: ["motion"],
    ai: { enabled: true, max_fps: 2 },
  });
  const camerasPutAt = Date.now();
  for (const id of cameras) await control.putCamera(specOf(id));

  return {
    cluster,
    nc,
    control,
    leases,
    rtsp,
    cameras,
    nodes,
    live: () => nodes.filter((n) => n.alive()),
    addNode,
    detector,
    serverPids: () => {
      noteServerPids();
      return [...pids];
    },
    noteServerPids,
    specOf,
    camerasPutAt,
  };
}
