// The camera actor's decisions by time, on a ManualClock: on-demand publishing
// follows the gateways' viewer counts, a count expires when its gateway stops
// refreshing it, and publishing stops only after the linger time without
// viewers. The media parts are the actor's injected StartIngest/StartWhip
// (the wiring under test is the actor's own), so no time passes but the
// clock's: every bound below is exact.

import { describe, expect, it, onTestFinished } from "vitest";
import { cameraKind, type IngestCallbacks, type StartIngest, type StartWhip } from "../actors/camera/camera-actor.ts";
import { createRegistry, loadConfig, ManualClock, silentLogger, type Actor, type ActorContext, type StatusReport } from "../runtime/index.ts";
import { CameraSpecSchema, type CameraSpecInput } from "../subjects/index.ts";

const LINGER_MS = 30_000;
const TTL_MS = 10_000;
const STREAM = { codec: "h264", width: 640, height: 360, fps: 15 };

interface Harness {
  actor: Actor;
  clock: ManualClock;
  /** The ingest's callbacks, once the actor started it. */
  ingest(): IngestCallbacks;
  /** WHIP sessions the actor started, in order, with whether each was stopped. */
  whips: Array<{ stopped: boolean }>;
  statuses: StatusReport[];
  /** The WHIP session currently up (started and not stopped). */
  live(): number;
}

async function camera(spec: Partial<CameraSpecInput> = {}): Promise<Harness> {
  const clock = new ManualClock();
  let callbacks: IngestCallbacks | undefined;
  const whips: Harness["whips"] = [];
  const statuses: StatusReport[] = [];
  const startIngest: StartIngest = async (_spec, options) => {
    callbacks = options;
    return { stop: async () => {} };
  };
  const startWhip: StartWhip = (options) => {
    const whip = { stopped: false };
    whips.push(whip);
    // Up at once: what is under test is when the actor starts and stops it.
    queueMicrotask(() => options.onUp());
    return { writeRtp: () => {}, stop: async () => void (whip.stopped = true), uptimeS: () => 0 };
  };
  const config = loadConfig({ ON_DEMAND_LINGER_MS: String(LINGER_MS) }, "node");
  const ctx: ActorContext = {
    spec: CameraSpecSchema.parse({ id: "door", url: "rtsp://127.0.0.1:1/door", publish: "on-demand", ...spec }),
    node: "n1",
    epoch: 1,
    logger: silentLogger(),
    registry: createRegistry({ node: "n1" }, { processMetrics: false }),
    config,
    summaryIntervalMs: 5_000,
    publishStatus: (report) => void statuses.push(report),
    publishDetection: () => "queued",
    fail: (err) => {
      throw err;
    },
    trustsOrigin: async () => false,
    nextFrameId: (() => {
      let n = 0;
      return () => n++;
    })(),
  };
  // No frames arrive from this ingest: a stall timeout longer than any test keeps STREAMING.
  const actor = await cameraKind({ startIngest, startWhip, clock, timing: { stallTimeoutMs: 24 * 3_600_000 } }).start(ctx);
  onTestFinished(() => actor.stop("shutdown"));
  const h: Harness = {
    actor,
    clock,
    ingest: () => {
      if (callbacks === undefined) throw new Error("the actor has not started its ingest");
      return callbacks;
    },
    whips,
    statuses,
    live: () => whips.filter((w) => !w.stopped).length,
  };
  h.ingest().onReady(STREAM);
  expect(actor.status().state).toBe("STREAMING");
  return h;
}

/** Lets the fake WHIP's onUp (a microtask) reach the actor. */
const settle = () => new Promise<void>((res) => setImmediate(res));

describe("camera actor on a ManualClock: on-demand publishing", () => {
  it("viewers start publishing; a count not refreshed expires at its TTL; publishing stops exactly one linger time later", async () => {
    const c = await camera();
    expect(c.whips).toHaveLength(0);

    expect(c.actor.viewers?.({ gateway: "gw-a", viewers: 2, ttlMs: TTL_MS })).toBe(2);
    await settle();
    expect(c.live()).toBe(1);
    expect(c.actor.status()).toMatchObject({ publishing: true, viewers: 2 });

    // The gateway dies: no refresh. The count holds for its TTL…
    c.clock.advance(TTL_MS - 1);
    expect(c.actor.status().viewers).toBe(2);
    // …and is gone right after it (the expiry timer fires 1 ms past it).
    c.clock.advance(2);
    expect(c.actor.status().viewers).toBe(0);
    expect(c.actor.status().publishing).toBe(true);

    // The linger time runs from the expiry.
    c.clock.advance(LINGER_MS - 2);
    expect(c.live()).toBe(1);
    c.clock.advance(2);
    await settle();
    expect(c.live()).toBe(0);
    expect(c.whips).toHaveLength(1);
    expect(c.actor.status().publishing).toBe(false);
  });

  it("a gateway that keeps refreshing keeps the camera publishing, however long", async () => {
    const c = await camera();
    c.actor.viewers?.({ gateway: "gw-a", viewers: 1, ttlMs: TTL_MS });
    await settle();
    for (let i = 0; i < 20; i++) {
      c.clock.advance(TTL_MS / 2);
      c.actor.viewers?.({ gateway: "gw-a", viewers: 1, ttlMs: TTL_MS });
    }
    await settle();
    expect(c.whips).toHaveLength(1);
    expect(c.live()).toBe(1);
    expect(c.actor.status().viewers).toBe(1);
  });

  it("viewers back within the linger time cancel the stop; two gateways' counts add up and expire apart", async () => {
    const c = await camera();
    c.actor.viewers?.({ gateway: "gw-a", viewers: 1, ttlMs: TTL_MS });
    c.actor.viewers?.({ gateway: "gw-b", viewers: 3, ttlMs: 3 * TTL_MS });
    await settle();
    expect(c.actor.status().viewers).toBe(4);

    // gw-a's count expires; gw-b's still holds: no linger, still publishing.
    c.clock.advance(TTL_MS + 1);
    expect(c.actor.status().viewers).toBe(3);
    // gw-b says its viewers left: the linger starts now.
    expect(c.actor.viewers?.({ gateway: "gw-b", viewers: 0, ttlMs: TTL_MS })).toBe(0);
    c.clock.advance(LINGER_MS - 1);
    // A viewer returns 1 ms before the stop would have come.
    c.actor.viewers?.({ gateway: "gw-a", viewers: 1, ttlMs: 10 * LINGER_MS });
    c.clock.advance(5 * LINGER_MS);
    await settle();
    expect(c.whips).toHaveLength(1);
    expect(c.live()).toBe(1);

    // It leaves: the stop comes one full linger time later, not sooner.
    c.actor.viewers?.({ gateway: "gw-a", viewers: 0, ttlMs: TTL_MS });
    c.clock.advance(LINGER_MS - 1);
    expect(c.live()).toBe(1);
    c.clock.advance(1);
    await settle();
    expect(c.live()).toBe(0);
  });

  it("status timestamps come from the clock's wall time; the periodic summary runs on the clock", async () => {
    const c = await camera();
    expect(c.actor.status().since_ts).toBe(c.clock.wallNow());
    const periodic = () => c.statuses.filter((s) => s.trigger === "periodic").length;
    expect(periodic()).toBe(0);
    c.clock.advance(5_000 * 3);
    expect(periodic()).toBe(3);
  });
});

describe("state edges", () => {
  it("each edge's StatusEvent names the state entered, at once: CONNECTING on start, STREAMING on the source's first packet, ERROR and CONNECTING again with the retry", async () => {
    const h = await camera({ publish: "off" });
    const edges = () => h.statuses.filter((s) => s.trigger === "edge").map((s) => s.state);
    // No periodic summary has run (no time passed): the STREAMING seen here is the edge itself.
    expect(edges()).toEqual(["CONNECTING", "STREAMING"]);
    expect(h.statuses.find((s) => s.state === "STREAMING")?.stream).toEqual(STREAM);
    h.ingest().onFailed({ code: "SOURCE_UNREACHABLE", detail: "gone" });
    const error = h.statuses.at(-1)!;
    expect(error.state).toBe("ERROR");
    // The reconnect comes after the jittered delay the event announced: 0.25–0.5 s for the first.
    const retry = error.error!.retry_in_ms;
    expect(retry).toBeGreaterThanOrEqual(250);
    expect(retry).toBeLessThanOrEqual(500);
    h.clock.advance(retry - 1);
    expect(edges().at(-1)).toBe("ERROR");
    h.clock.advance(1);
    expect(edges()).toEqual(["CONNECTING", "STREAMING", "ERROR", "CONNECTING"]);
  });
});
