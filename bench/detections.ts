// Detection events: how many a node publishes per second, and how long a
// frame takes from its arrival at the node to its DetectionEvent reaching a
// JetStream consumer.
//
// 1. Throughput. One in-process node (FleetNode) runs one actor that hands
//    BENCH_EVENTS DetectionEvents (2 boxes each, ~450 bytes of JSON) to
//    `ctx.publishDetection` as fast as it can: the whole node path (lease
//    fencing, stamping, JSON, the bounded async publisher, JetStream acks).
//    Timed from the first hand-over until the stream holds them all.
//    Baseline in the same run: raw JetStream async publishes of
//    same-size messages with a Nats-Msg-Id, the same 512 in flight, on
//    another connection to the same server. Target: ≥ 20,000 events/s.
// 2. Latency. The same node with real camera actors (FFmpeg testsrc,
//    320x240, ai.max_fps 10) and the reference detector in process;
//    an ordered consumer measures Date.now() − frame_ts of each event: frame
//    handed over by FFmpeg → motion gate → gRPC Detect → JetStream → consumer.
//    BENCH_CAMERAS (4) cameras for BENCH_WINDOW_S (15) seconds; p50 and p99.
//
// Everything on loopback on one machine; on 2 cores the figures are noisy.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { cameraActorKind } from "../actors/index.ts";
import { ReferenceDetector, serveDetector } from "../proto/index.ts";
import { ControlClient, createRegistry, FleetNode, KindRegistry, loadConfig, silentLogger, type ActorContext, type ActorKind } from "../runtime/index.ts";
import { NatsServerProcess } from "../runtime/infra/nats-server.ts";
import { DetectionEventSchema, detectionMsgId, STREAMS, subjects, type DetectionEvent } from "../subjects/index.ts";
import { quantile, waitUntil } from "./fleet-bench.ts";

const EVENTS = Number(process.env.BENCH_EVENTS ?? 50_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CAMERAS = Number(process.env.BENCH_CAMERAS ?? 4);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 15);
const WINDOW = 512;
const TARGET_PER_S = 20_000;

/** The actor of the throughput run: hands its context to the benchmark. */
let benchCtx: ((ctx: ActorContext) => void) | undefined;
const benchKind: ActorKind = {
  name: "bench-detections",
  async start(ctx) {
    benchCtx?.(ctx);
    return {
      update() {},
      async stop() {},
      status: () => ({ camera: ctx.spec.id, node: ctx.node, epoch: ctx.epoch, state: "STREAMING", since_ts: Date.now(), frames: { received: 0, sent_ai: 0, skipped_motion: 0, detections: 0 }, publishing: false, viewers: 0 }),
    };
  },
};

function report(frameId: number): Omit<DetectionEvent, "type" | "id" | "camera" | "tenant" | "site" | "node" | "epoch" | "ts"> {
  const now = Date.now();
  return {
    frame_id: frameId,
    frame_ts: now,
    solutions: ["motion"],
    detections: [
      { label: "motion", score: 0.734, box: { x: 0.3125, y: 0.2781, w: 0.1563, h: 0.2219 } },
      { label: "motion", score: 0.412, box: { x: 0.0125, y: 0.75, w: 0.1063, h: 0.125 } },
    ],
    motion: { score: 0.0351 },
    latency: { inference_ms: 6.8, e2e_ms: 9.1 },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-bench-det-"));
  const nats = new NatsServerProcess({ name: "bench-det", storeDir: join(dir, "store") });
  // Stopped in reverse order of start, whatever fails.
  const cleanups: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true }), () => nats.stop()];
  try {
    await nats.start();
    const detector = await serveDetector(new ReferenceDetector(), { listen: "127.0.0.1:0" });
    cleanups.push(() => detector.stop());
    const config = loadConfig(
      {
        NATS_URL: nats.url,
        NODE_ID: "bench",
        HTTP_PORT: "0",
        ALLOW_LOCAL_SOURCES: "true",
        AI_ENDPOINT: detector.address,
        CAMFLEET_ACTOR_KIND: "bench-detections",
        CAMFLEET_DETECTIONS_BUFFER: String(EVENTS + 1),
      },
      "node",
    );
    const nc = await connect({ servers: nats.url });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const client = new ControlClient(nc);
    const stored = async () => (await jsm.streams.info(STREAMS.detections)).state.messages;

    // ------------------------------------------------------------ throughput
    const node = await FleetNode.start({
      config,
      logger: silentLogger(),
      registry: createRegistry({ node: "bench" }, { processMetrics: false }),
      version: "bench",
      kinds: new KindRegistry().register(benchKind).register(cameraActorKind),
    });
    cleanups.push(() => node.stop());
    const ctx = await new Promise<ActorContext>((resolve) => {
      benchCtx = resolve;
      void client.putCamera({ id: "bench", url: "rtsp://127.0.0.1/none" });
    });

    const sample = JSON.stringify({ type: "detection", id: detectionMsgId("bench", ctx.epoch, 123456), camera: "bench", tenant: "default", site: "default", node: "bench", epoch: ctx.epoch, ts: Date.now(), ...report(123456) });
    const payload = Buffer.from(sample);
    // The node's connection options (runtime/infra/nats.ts), so the two differ only in what camfleet adds.
    const rawNc = await connect({ servers: nats.url, noAsyncTraces: true });
    cleanups.push(() => rawNc.close());
    const raw = jetstream(rawNc);
    console.log(`detection event: ${payload.length} bytes of JSON; ${EVENTS} events per run, ${RUNS} runs each, alternating`);

    const baseline: number[] = [];
    const camfleet: number[] = [];
    let frame = 0;
    for (let run = 0; run < RUNS; run++) {
      // Raw JetStream async publish, 512 in flight, with msg ids.
      await jsm.streams.purge(STREAMS.detections);
      let t0 = performance.now();
      let next = 0;
      const subject = subjects.detections("raw");
      await new Promise<void>((resolve, reject) => {
        let inFlight = 0;
        let acked = 0;
        const pump = () => {
          while (inFlight < WINDOW && next < EVENTS) {
            const i = next++;
            inFlight++;
            raw.publish(subject, payload, { msgID: `raw:${run}:${i}` }).then(() => {
              inFlight--;
              if (++acked === EVENTS) resolve();
              else pump();
            }, reject);
          }
        };
        pump();
      });
      baseline.push(EVENTS / ((performance.now() - t0) / 1000));

      // The node path.
      await jsm.streams.purge(STREAMS.detections);
      t0 = performance.now();
      for (let i = 0; i < EVENTS; i++) {
        const outcome = ctx.publishDetection(report(frame++));
        if (outcome !== "queued") throw new Error(`publishDetection: ${outcome}`);
        if (i % 2000 === 1999) await new Promise((r) => setImmediate(r)); // let acks in, as a real actor would
      }
      await waitUntil(async () => (await stored()) >= EVENTS, 120_000, "all events stored", 5);
      camfleet.push(EVENTS / ((performance.now() - t0) / 1000));
      console.log(`  run ${run + 1}: raw ${Math.round(baseline.at(-1)!)}/s, camfleet ${Math.round(camfleet.at(-1)!)}/s`);
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const c = med(camfleet);
    const b = med(baseline);
    console.log(
      `throughput (median of ${RUNS}): camfleet publishDetection ${Math.round(c)} events/s, raw JetStream async publish ${Math.round(b)} msgs/s ` +
        `(${((c / b) * 100).toFixed(0)}% of raw); target ≥ ${TARGET_PER_S}/s: ${c >= TARGET_PER_S ? "met" : "NOT met"}`,
    );
    await client.deleteCamera("bench");

    // ------------------------------------------------------------ latency
    await node.stop();
    await jsm.streams.purge(STREAMS.detections);
    const camNode = await FleetNode.start({
      config: { ...config, nodeId: "bench-cam", actorKind: "camera" },
      logger: silentLogger(),
      registry: createRegistry({ node: "bench-cam" }, { processMetrics: false }),
      version: "bench",
      kinds: new KindRegistry().register(benchKind).register(cameraActorKind),
    });
    cleanups.push(() => camNode.stop());
    const latencies: number[] = [];
    const inference: number[] = [];
    const consumer = await jetstream(nc).consumers.get(STREAMS.detections, { deliver_policy: DeliverPolicy.New });
    const messages = await consumer.consume();
    let measuring = false;
    const reading = (async () => {
      for await (const m of messages) {
        const at = Date.now();
        const e = DetectionEventSchema.parse(m.json());
        if (!measuring) continue;
        latencies.push(at - e.frame_ts);
        inference.push(e.latency.inference_ms);
      }
    })();
    for (let i = 0; i < CAMERAS; i++) {
      await client.putCamera({ id: `lat${i}`, url: "testsrc:?size=320x240&rate=10", publish: "off", ai: { enabled: true, max_fps: 10 } });
    }
    await sleep(3000); // cameras up, detector backgrounds seeded
    measuring = true;
    await sleep(WINDOW_S * 1000);
    measuring = false;
    await messages.close();
    await reading;
    latencies.sort((x, y) => x - y);
    inference.sort((x, y) => x - y);
    console.log(
      `latency frame → JetStream consumer (${CAMERAS} cameras × 10 fps, ${latencies.length} events in ${WINDOW_S} s): ` +
        `p50 ${quantile(latencies, 0.5)} ms, p99 ${quantile(latencies, 0.99)} ms, max ${latencies.at(-1)} ms; ` +
        `of which Detect round trip p50 ${quantile(inference, 0.5)} ms, p99 ${quantile(inference, 0.99)} ms`,
    );
  } finally {
    for (const fn of cleanups.reverse()) await fn().catch((err: unknown) => console.error(err));
  }
}

await main();
process.exit(0);
