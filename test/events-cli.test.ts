// `camfleet events` against a real nats-server holding known events:
// filters, --type, --since (time and duration), durable consumers that go on
// where they stopped, live tailing, and bad arguments.

import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ensureJetStream } from "../runtime/index.ts";
import { subjects, type DetectionEvent, type StatusEvent } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { startNats, type NatsHandle } from "./helpers/nats-harness.ts";
import { detectionEvent, statusEvent, type EventSource } from "./helpers/detections.ts";
import { waitFor } from "./helpers/wait.ts";

// vitest ignores hooks registered inside beforeAll: teardowns are collected here.
const teardown: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const fn of teardown.reverse()) await fn();
});

type Where = EventSource;
const detection = detectionEvent;
const status = (w: Where) => statusEvent(w, "edge");


const C1 = { camera: "c1", tenant: "acme", site: "hq" };
const C2 = { camera: "c2", tenant: "acme", site: "lab" };
const C3 = { camera: "c3", tenant: "other", site: "hq" };

let nats: NatsHandle;
let publish: (e: DetectionEvent | StatusEvent) => Promise<void>;
let splitTs = 0;

beforeAll(async () => {
  nats = await startNats({ onCleanup: (fn) => void teardown.push(fn) });
  const nc = await connect({ servers: nats.url });
  teardown.push(() => nc.close());
  await ensureJetStream(nc);
  const js = jetstream(nc);
  publish = async (e) => {
    const subject = e.type === "detection" ? subjects.detections(e.camera, e.tenant, e.site) : subjects.status(e.camera, e.tenant, e.site);
    await js.publish(subject, JSON.stringify(e), e.type === "detection" ? { msgID: e.id } : {});
  };
  // Batch A: one detection per camera and a status of c1.
  for (const w of [C1, C2, C3]) await publish(detection(w));
  await publish(status(C1));
  const t = Date.now();
  await waitFor(() => Date.now() > t + 5, { message: "clock moved on" });
  splitTs = Date.now();
  await waitFor(() => Date.now() > splitTs + 5, { message: "clock moved on" });
  // Batch B, after splitTs.
  for (const w of [C1, C2]) await publish(detection(w));
  await publish(status(C1));
});

async function events(args: string[]): Promise<Array<Record<string, unknown>>> {
  const proc = runCamfleet(["events", ...args], { env: { NATS_URL: nats.url }, onCleanup: (fn) => void teardown.push(fn) });
  const exit = await proc.exited;
  expect(exit.code, proc.stderr()).toBe(0);
  return proc.lines;
}

const cams = (lines: Array<Record<string, unknown>>) => lines.map((l) => `${l.type}:${l.camera}`).sort();

describe("camfleet events", () => {
  test("--since all --no-follow replays everything stored, one JSON event per line; filters narrow it", async () => {
    expect(cams(await events(["--since", "all", "--no-follow"]))).toEqual(
      ["detection:c1", "detection:c1", "detection:c2", "detection:c2", "detection:c3", "status:c1", "status:c1"].sort(),
    );
    expect(cams(await events(["--since", "all", "--no-follow", "--type", "detection", "--tenant", "acme"]))).toEqual(["detection:c1", "detection:c1", "detection:c2", "detection:c2"]);
    expect(cams(await events(["--since", "all", "--no-follow", "--site", "hq", "--type", "detection"]))).toEqual(["detection:c1", "detection:c1", "detection:c3"]);
    expect(cams(await events(["--since", "1h", "--no-follow", "--camera", "c1", "--type", "status"]))).toEqual(["status:c1", "status:c1"]);
  });

  test("--since a time replays only what came after it", async () => {
    const lines = await events(["--since", new Date(splitTs).toISOString(), "--no-follow"]);
    expect(cams(lines)).toEqual(["detection:c1", "detection:c2", "status:c1"]);
    expect(lines.every((l) => (l.ts as number) >= splitTs)).toBe(true);
  });

  test("--durable goes on where the last run stopped", async () => {
    expect(cams(await events(["--durable", "cli-test", "--type", "detection", "--camera", "c1", "--no-follow"]))).toEqual(["detection:c1", "detection:c1"]);
    expect(await events(["--durable", "cli-test", "--type", "detection", "--camera", "c1", "--no-follow"])).toEqual([]);
    const fresh = detection(C1);
    await publish(fresh);
    const next = await events(["--durable", "cli-test", "--type", "detection", "--camera", "c1", "--no-follow"]);
    expect(next.map((l) => l.id)).toEqual([fresh.id]);
  });

  test("without --since it tails new events as they come, filtered", async () => {
    const proc = runCamfleet(["events", "--type", "detection", "--camera", "c2"], { env: { NATS_URL: nats.url }, onCleanup: (fn) => void teardown.push(fn) });
    // The consumer starts at "new": publish until one shows up.
    await waitFor(async () => {
      await publish(detection(C3));
      await publish(detection(C2));
      return proc.lines.length > 0;
    }, { timeoutMs: 15_000, intervalMs: 200, message: "a live event printed" });
    expect(proc.lines.every((l) => l.type === "detection" && l.camera === "c2")).toBe(true);
    const exit = await proc.stop();
    expect(exit.code).toBe(0);
  });

  test("bad arguments: exit 1 with INVALID_ARGUMENT naming the problem", async () => {
    for (const [args, text] of [
      [["--since", "yesterday"], "neither a duration"],
      [["--camera", "a.b"], "camera id"],
      [["--type", "alerts"], "--type must be"],
    ] as const) {
      const proc = runCamfleet(["events", "--no-follow", ...args], { env: { NATS_URL: nats.url }, onCleanup: (fn) => void teardown.push(fn) });
      expect((await proc.exited).code).toBe(1);
      expect(proc.stderr()).toContain("INVALID_ARGUMENT");
      expect(proc.stderr()).toContain(text);
    }
  });
});
