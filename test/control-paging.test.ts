// A fleet larger than one NATS message: cameras.list pages, every page fits
// the server's max_payload, the CLI walks the pages, and no request, however
// large, takes the answering node down (a responder that threw would, and the
// next node to answer the same request would follow).

import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CAMERAS_LIST_DEFAULT_LIMIT, BUCKETS, control, kvKeys, subjects, type CameraSpecInput } from "../subjects/index.ts";
import { LOG_MESSAGES, respondSafely, silentLogger } from "../runtime/index.ts";
import { isAlive, runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startNats, type NatsHandle } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

const FLEET = 10_000;
const MAX_PAYLOAD = 1024 * 1024; // nats-server's default

let nats: NatsHandle;
let node: CamfleetProcess;
let nc: NatsConnection;
const teardown: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const fn of teardown.reverse()) await fn();
});

const id = (i: number) => `cam-${String(i).padStart(5, "0")}`;

beforeAll(async () => {
  const onCleanup = (fn: () => Promise<void>) => void teardown.push(fn);
  nats = await startNats({ onCleanup });
  node = (await startFleetNode({ id: "pg1", natsUrls: [nats.url], env: { MAX_CAMERAS: "20", LOG_LEVEL: "info" }, onCleanup })).proc;
  nc = await connect({ servers: nats.url });
  teardown.push(() => nc.close());

  // Straight into the bucket: 10,000 control puts would test the put path, not the list.
  const kv = await new Kvm(nc).open(BUCKETS.cameras);
  for (let start = 0; start < FLEET; start += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, FLEET - start) }, (_, k) => {
        const spec: CameraSpecInput = { id: id(start + k), url: `rtsp://10.0.0.1/${start + k}`, site: start + k < 100 ? "big" : "default" };
        return kv.put(kvKeys.camera(spec.id), JSON.stringify(spec));
      }),
    );
  }
  await waitFor(async () => (await list({ limit: 1 })).total === FLEET, { timeoutMs: 60_000, message: "the node sees the whole fleet" });
}, 120_000);

async function request(subject: string, body: unknown): Promise<{ bytes: number; json: Record<string, unknown> }> {
  const msg = await nc.request(subject, typeof body === "string" ? body : JSON.stringify(body), { timeout: 10_000 });
  return { bytes: msg.data.length, json: msg.json<Record<string, unknown>>() };
}

async function list(body: Record<string, unknown>) {
  const { bytes, json } = await request(subjects.ctl.camerasList, body);
  const reply = control.camerasList.reply.parse(json);
  if (!reply.ok) throw new Error(`${reply.error.code}: ${reply.error.message}`);
  return { ...reply, bytes };
}

describe("cameras.list with 10,000 cameras", () => {
  it("pages in id order, each page within max_payload, every camera exactly once", async () => {
    const first = await list({});
    expect(first.cameras).toHaveLength(CAMERAS_LIST_DEFAULT_LIMIT);
    expect(first.next).toBe(id(CAMERAS_LIST_DEFAULT_LIMIT - 1));

    const seen: string[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const page = await list({ limit: 1000, ...(after !== undefined ? { after } : {}) });
      expect(page.bytes).toBeLessThanOrEqual(MAX_PAYLOAD);
      seen.push(...page.cameras.map((c) => c.camera.id));
      after = page.next;
      pages++;
    } while (after !== undefined);
    expect(pages).toBe(FLEET / 1000);
    expect(seen).toHaveLength(FLEET);
    expect(new Set(seen).size).toBe(FLEET);
    expect(seen).toEqual([...seen].sort());
    // The cameras the node runs carry owner and state in the pages.
    const owned = (await list({ limit: 1000 })).cameras.filter((c) => c.owner === "pg1");
    expect(owned.length).toBeGreaterThan(0);
  });

  it("a cursor past the end gives an empty last page; filters page too", async () => {
    const end = await list({ after: "zzz" });
    expect(end.cameras).toEqual([]);
    expect(end.next).toBeUndefined();
    const big = await list({ site: "big", limit: 60 });
    expect(big.total).toBe(100);
    expect(big.cameras).toHaveLength(60);
    const rest = await list({ site: "big", limit: 60, after: big.next });
    expect(rest.cameras).toHaveLength(40);
    expect(rest.next).toBeUndefined();
  });

  it("bad paging input is INVALID_ARGUMENT naming the field", async () => {
    for (const [body, field] of [
      [{ limit: 0 }, "limit"],
      [{ limit: 1001 }, "limit"],
      [{ limit: "ten" }, "limit"],
      [{ after: "a.b" }, "after"],
      [{ page: 2 }, "page"],
    ] as const) {
      const { json } = await request(subjects.ctl.camerasList, body);
      expect(json).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
      expect((json.error as { message: string }).message).toContain(field);
    }
  });

  it("`camfleet camera ls` lists all 10,000", async () => {
    const cli = runCamfleet(["camera", "ls"], { env: { NATS_URL: nats.url }, onCleanup: (fn) => void teardown.push(fn) });
    const exit = await cli.exited;
    expect(exit.code, cli.stderr()).toBe(0);
    const rows = cli.lines.map((l) => String(l.raw ?? "")).filter((l) => l.startsWith("cam-"));
    expect(rows).toHaveLength(FLEET);
    expect(new Set(rows.map((r) => r.split(/\s+/)[0])).size).toBe(FLEET);
  }, 60_000);
});

describe("no request or reply takes a node down", () => {
  it("a page of large specs is cut to fit one message, and goes on from there", async () => {
    // 100 cameras of ~20 KB each (64 labels of 300 bytes): 2 MB, twice what one message holds.
    const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "v".repeat(256)]));
    const kv = await new Kvm(nc).open(BUCKETS.cameras);
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        kv.put(kvKeys.camera(`fat-${String(i).padStart(3, "0")}`), JSON.stringify({ id: `fat-${String(i).padStart(3, "0")}`, url: "rtsp://10.0.0.2/s", site: "fat", labels })),
      ),
    );
    await waitFor(async () => (await list({ site: "fat", limit: 1 })).total === 100, { timeoutMs: 20_000 });
    const page = await list({ site: "fat", limit: 100 });
    expect(page.bytes).toBeLessThanOrEqual(MAX_PAYLOAD);
    expect(page.cameras.length).toBeGreaterThan(10);
    expect(page.cameras.length).toBeLessThan(100);
    expect(page.next).toBe(page.cameras.at(-1)?.camera.id);
    const rest = await list({ site: "fat", limit: 100, after: page.next });
    expect(page.cameras.length + rest.cameras.length).toBeLessThanOrEqual(100);
  });

  it("a 1 MiB spec is refused with INVALID_ARGUMENT naming labels; the node goes on answering", async () => {
    const labels = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`label-${i}`, "x".repeat(300)]));
    const body = JSON.stringify({ id: "huge", url: "rtsp://10.0.0.3/s", labels });
    expect(body.length).toBeGreaterThan(900 * 1024);
    expect(body.length).toBeLessThan(MAX_PAYLOAD);
    const { json } = await request(subjects.ctl.camerasPut, body);
    expect(json).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
    expect((json.error as { message: string }).message).toMatch(/labels: must have at most 64 entries/);
    const kv = await new Kvm(nc).open(BUCKETS.cameras);
    expect(await kv.get(kvKeys.camera("huge"))).toBeNull();
    expect((await request(subjects.ctl.nodesList, {})).json).toMatchObject({ ok: true });
  });

  it("respondSafely answers PAYLOAD_TOO_LARGE instead of throwing when a reply would not fit", async () => {
    const sub = nc.subscribe("test.big-reply", {
      callback: (_err, msg) => {
        const sent = respondSafely(nc, msg, { ok: true, blob: "b".repeat(MAX_PAYLOAD + 1) }, silentLogger());
        expect(sent).toBe(false);
      },
    });
    teardown.push(async () => sub.unsubscribe());
    const reply = (await nc.request("test.big-reply", "{}", { timeout: 5000 })).json<Record<string, unknown>>();
    expect(reply).toMatchObject({ ok: false, error: { code: "PAYLOAD_TOO_LARGE" } });
  });

  it("the node process never restarted", () => {
    expect(isAlive(node.child.pid!)).toBe(true);
    expect(node.lines.filter((l) => l.msg === LOG_MESSAGES.nodeReady)).toHaveLength(1);
    expect(node.lines.filter((l) => Number(l.level) >= 50)).toEqual([]);
  });
});
