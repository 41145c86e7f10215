import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { BUCKETS, control, subjects } from "../subjects/index.ts";
import { runCamfleet, type CamfleetProcess } from "./helpers/camfleet-process.ts";
import { startNats, type NatsHandle } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";
import { LOG_MESSAGES } from "../runtime/index.ts";

let nats: NatsHandle;
let node: CamfleetProcess;
let nc: NatsConnection;

// Hooks cannot be registered from inside beforeAll: collect teardowns here, run them last-in first-out.
const teardown: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const fn of teardown.reverse()) await fn();
});

beforeAll(async () => {
  const onCleanup = (fn: () => Promise<void>) => void teardown.push(fn);
  nats = await startNats({ onCleanup });
  node = runCamfleet(["node"], {
    // AI_* are the node's defaults for cameras that do not say (tested below).
    env: { NATS_URL: nats.url, NODE_ID: "ctl1", HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "sim", AI_MAX_FPS: "3", AI_TIMEOUT_MS: "700" },
    onCleanup,
  });
  await node.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);
  nc = await connect({ servers: nats.url });
  teardown.push(() => nc.close());
});

async function call(subject: string, body: unknown): Promise<Record<string, unknown>> {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  const msg = await nc.request(subject, payload, { timeout: 5000 });
  return msg.json<Record<string, unknown>>();
}

async function expectError(subject: string, body: unknown, code: string, message?: RegExp) {
  const reply = await call(subject, body);
  expect(reply).toMatchObject({ ok: false, error: { code } });
  if (message !== undefined) expect((reply.error as { message: string }).message).toMatch(message);
  return reply;
}

async function cameraKeys(): Promise<string[]> {
  const kv = await new Kvm(nc).open(BUCKETS.cameras);
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  return keys;
}

describe("control over NATS: bad input changes nothing", () => {
  it("cameras.put", async () => {
    const s = subjects.ctl.camerasPut;
    await expectError(s, "{not json", "INVALID_ARGUMENT", /not valid JSON/);
    await expectError(s, { id: "a.b", url: "rtsp://h/s" }, "INVALID_ARGUMENT", /id:/);
    await expectError(s, { id: "c1" }, "INVALID_ARGUMENT", /url:/);
    await expectError(s, { id: "c1", url: "rtsp://h/s", colour: "red" }, "INVALID_ARGUMENT", /colour/);
    await expectError(s, { id: "c1", url: "ftp://h/s" }, "INVALID_ARGUMENT", /url:/);
    await expectError(s, { id: "c1", url: "testsrc:?size=640x360" }, "INVALID_ARGUMENT", /ALLOW_LOCAL_SOURCES/);
    await expectError(s, { id: "c1", url: "rtsp://h/s", ai: { max_fps: 0 } }, "INVALID_ARGUMENT", /ai\.max_fps/);
    expect(await cameraKeys()).toEqual([]);
  });

  it("cameras.get, cameras.delete", async () => {
    for (const s of [subjects.ctl.camerasGet, subjects.ctl.camerasDelete]) {
      await expectError(s, {}, "INVALID_ARGUMENT", /id:/);
      await expectError(s, { id: ">" }, "INVALID_ARGUMENT");
      await expectError(s, { id: "nope" }, "NOT_FOUND", /no camera nope/);
    }
  });

  it("cameras.list, nodes.list", async () => {
    await expectError(subjects.ctl.camerasList, { tenant: "a b" }, "INVALID_ARGUMENT", /tenant/);
    await expectError(subjects.ctl.camerasList, { extra: 1 }, "INVALID_ARGUMENT");
    await expectError(subjects.ctl.nodesList, { extra: 1 }, "INVALID_ARGUMENT");
  });

  it("camera.<id>.start and .stop", async () => {
    await expectError(subjects.ctl.cameraStart("fresh"), {}, "INVALID_ARGUMENT", /url: is required/);
    await expectError(subjects.ctl.cameraStart("fresh"), { url: "rtsp://h/s", id: "other" }, "INVALID_ARGUMENT");
    await expectError(subjects.ctl.cameraStart("fresh"), { publish: "sometimes", url: "rtsp://h/s" }, "INVALID_ARGUMENT", /publish/);
    // A token that is a legal subject token but not a legal id.
    await expectError("camfleet.ctl.camera.a$b.start", { url: "rtsp://h/s" }, "INVALID_ARGUMENT", /camera id/);
    await expectError(subjects.ctl.cameraStop("nope"), {}, "NOT_FOUND");
    await expectError(subjects.ctl.cameraStop("nope"), { why: "x" }, "INVALID_ARGUMENT");
    expect(await cameraKeys()).toEqual([]);
  });

  it("node.<id>.drain of this node refuses a bad body; an unknown node has no responder", async () => {
    await expectError(subjects.ctl.nodeDrain("ctl1"), { now: true }, "INVALID_ARGUMENT");
    await expect(nc.request(subjects.ctl.nodeDrain("ghost"), "{}", { timeout: 2000 })).rejects.toThrow(/no responders/i);
  });
});

describe("control over NATS: the happy paths", () => {
  it("a camera created without AI settings gets the node's AI_MAX_FPS and AI_TIMEOUT_MS; given ones win", async () => {
    const put = await call("camfleet.ctl.cameras.put", { id: "ai-defaults", url: "rtsp://h/s", enabled: false });
    expect(put).toMatchObject({ ok: true, camera: { ai: { enabled: false, max_fps: 3, timeout_ms: 700, motion_gate: true } } });
    const own = await call("camfleet.ctl.cameras.put", { id: "ai-own", url: "rtsp://h/s", enabled: false, ai: { enabled: true, max_fps: 0.5 } });
    expect(own).toMatchObject({ ok: true, camera: { ai: { enabled: true, max_fps: 0.5, timeout_ms: 700 } } });
    // camera.<id>.start of a new camera too; of an existing one the stored settings stay.
    const started = await call("camfleet.ctl.camera.ai-new.start", { url: "rtsp://h/s" });
    expect(started).toMatchObject({ ok: true, camera: { ai: { max_fps: 3, timeout_ms: 700 } } });
    const restarted = await call("camfleet.ctl.camera.ai-own.start", {});
    expect(restarted).toMatchObject({ ok: true, camera: { ai: { max_fps: 0.5, timeout_ms: 700 } } });
    for (const id of ["ai-defaults", "ai-own", "ai-new"]) expect(await call("camfleet.ctl.cameras.delete", { id })).toEqual({ ok: true });
  });

  it("secrets outside user:pass@ (SRT passphrase and streamid, signed-URL parameters) never come back in replies or logs", async () => {
    const secrets = ["s3cretPassphrase", "keyInStreamId", "sigValue123", "pa?ssword"];
    const specs = [
      { id: "srt1", url: `srt://10.0.0.9:9000?mode=caller&passphrase=${secrets[0]}&streamid=#!::r=live,s=${secrets[1]}` },
      { id: "hls1", url: `https://cdn.example/live.m3u8?Expires=1&sig=${secrets[2]}` },
    ];
    const replies = [];
    for (const spec of specs) replies.push(await call(subjects.ctl.camerasPut, spec));
    for (const spec of specs) replies.push(await call(subjects.ctl.camerasGet, { id: spec.id }));
    replies.push(await call(subjects.ctl.camerasList, {}));
    expect(replies.every((r) => r.ok === true)).toBe(true);
    // A raw '?' in a password is not a valid URL: refused, and the refusal does not echo it.
    const refused = await call(subjects.ctl.camerasPut, { id: "q1", url: `rtsp://admin:${secrets[3]}@10.0.0.5/live` });
    expect(refused).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
    replies.push(refused);
    await waitFor(() => node.lines.some((l) => l.camera === "srt1"), { message: "the node logged about the cameras" });
    for (const secret of secrets) {
      expect(JSON.stringify(replies)).not.toContain(secret);
      expect(JSON.stringify(node.lines)).not.toContain(secret);
    }
    for (const spec of specs) await call(subjects.ctl.camerasDelete, { id: spec.id });
  });

  it("status requests racing a stop are all answered at once (a reply or no responders), none left to time out", async () => {
    await call(subjects.ctl.camerasPut, { id: "race", url: "rtsp://10.0.0.9/race" });
    await waitFor(async () => (await call(subjects.ctl.cameraStatus("race"), {}).catch(() => undefined))?.state === "STREAMING", { timeoutMs: 10_000, message: "race STREAMING" });
    const slow: number[] = [];
    let answered = 0;
    let running = true;
    const ask = async () => {
      while (running) {
        const t0 = performance.now();
        await nc.request(subjects.ctl.cameraStatus("race"), "{}", { timeout: 3000 }).then(
          () => answered++,
          () => undefined, // no responders once it is gone
        );
        const ms = performance.now() - t0;
        if (ms > 1500) slow.push(Math.round(ms));
      }
    };
    const askers = Array.from({ length: 8 }, () => ask());
    await call(subjects.ctl.cameraStop("race"), {});
    await waitFor(async () => {
      try {
        await nc.request(subjects.ctl.cameraStatus("race"), "{}", { timeout: 3000 });
        return false;
      } catch {
        return true;
      }
    }, { timeoutMs: 10_000, message: "race released" });
    running = false;
    await Promise.all(askers);
    expect(answered).toBeGreaterThan(0);
    expect(slow).toEqual([]);
    await call(subjects.ctl.camerasDelete, { id: "race" });
  });

  it("put, get, list, status, stop, start, delete — never returning credentials", async () => {
    const put = await call(subjects.ctl.camerasPut, { id: "door", url: "rtsp://admin:hunter2@10.0.0.5/live", site: "hq" });
    expect(control.camerasPut.reply.parse(put)).toMatchObject({ ok: true, camera: { id: "door", url: "rtsp://***@10.0.0.5/live", site: "hq" } });

    const status = await waitFor(async () => {
      const r = await call(subjects.ctl.cameraStatus("door"), {}).catch(() => undefined);
      return r?.state === "STREAMING" ? r : undefined;
    }, { timeoutMs: 10_000, message: "camera door STREAMING" });
    expect(control.cameraStatus.reply.parse(status)).toMatchObject({ ok: true, camera: "door", node: "ctl1", state: "STREAMING" });

    const got = control.camerasGet.reply.parse(await call(subjects.ctl.camerasGet, { id: "door" }));
    expect(got).toMatchObject({ ok: true, camera: { url: "rtsp://***@10.0.0.5/live" }, lease: { camera: "door", node: "ctl1" } });

    const list = control.camerasList.reply.parse(await call(subjects.ctl.camerasList, { site: "hq" }));
    expect(list).toMatchObject({ ok: true, cameras: [{ camera: { id: "door", url: "rtsp://***@10.0.0.5/live" }, owner: "ctl1", state: "STREAMING" }] });
    expect(control.camerasList.reply.parse(await call(subjects.ctl.camerasList, { site: "elsewhere" }))).toEqual({ ok: true, cameras: [], total: 0 });
    expect(JSON.stringify([put, status, got, list])).not.toContain("hunter2");

    const nodes = control.nodesList.reply.parse(await call(subjects.ctl.nodesList, {}));
    expect(nodes).toMatchObject({ ok: true, nodes: [{ node: "ctl1", capacity: 32 }] });

    const stopped = await call(subjects.ctl.cameraStop("door"), {});
    expect(stopped).toMatchObject({ ok: true, camera: { enabled: false } });
    // Not running anywhere: the owner-only subject has no responder, answered at once.
    await waitFor(async () => {
      const t0 = performance.now();
      try {
        await nc.request(subjects.ctl.cameraStatus("door"), "{}", { timeout: 3000 });
        return false;
      } catch {
        return performance.now() - t0 < 1500; // at once: well before the 3000 ms timeout
      }
    }, { timeoutMs: 5000, message: "door released after stop" });

    const started = await call(subjects.ctl.cameraStart("door"), { name: "Front door" });
    expect(started).toMatchObject({ ok: true, camera: { enabled: true, name: "Front door", url: "rtsp://***@10.0.0.5/live" } });
    await waitFor(async () => (await call(subjects.ctl.cameraStatus("door"), {}).catch(() => undefined))?.state === "STREAMING", {
      timeoutMs: 10_000,
      message: "door STREAMING again",
    });

    expect(await call(subjects.ctl.camerasDelete, { id: "door" })).toEqual({ ok: true });
    await expectError(subjects.ctl.camerasGet, { id: "door" }, "NOT_FOUND");
  });
});
