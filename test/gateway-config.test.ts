// Camera config routes (POST /cameras, GET|PUT|PATCH|DELETE /cameras/{id})
// with ETag / If-Match, and the revision-checked writes of the control
// server under them: a real nats-server, a real `camfleet node` (sim), the
// gateway in-process.

import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { ControlClient } from "../runtime/index.ts";
import { BUCKETS, CamfleetError, kvKeys } from "../subjects/index.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { callJson } from "./helpers/http.ts";
import { startNats } from "./helpers/nats-harness.ts";

async function cluster(nodeEnv: Record<string, string> = {}) {
  const nats = await startNats({ onCleanup: onTestFinished });
  await startFleetNode({ id: "n1", natsUrls: [nats.url], env: nodeEnv, onCleanup: onTestFinished });
  const gw = await startTestGateway({ natsUrl: nats.url, nodeId: "gw-config", onCleanup: onTestFinished });
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  const kv = await new Kvm(nc).open(BUCKETS.cameras);
  /** The stored spec, unredacted, and its revision: what the routes must (not) have changed. */
  const stored = async (id: string) => {
    const e = await kv.get(kvKeys.camera(id));
    return e === null || e.operation !== "PUT" ? undefined : { spec: e.json<Record<string, any>>(), revision: e.revision }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  return { nats, nc, gw, stored, control: new ControlClient(nc) };
}

const call = callJson;

const revisionOf = (etag: string | null) => Number(/^"(\d+)"$/.exec(etag ?? "")?.[1] ?? NaN);

describe("camera config routes", () => {
  it("POST creates (201, Location, ETag; 409 when the id exists), GET reads it back with the same ETag, DELETE removes it", async () => {
    const { gw, stored } = await cluster();
    const created = await call(gw, "POST", "/cameras", { id: "hall", url: "rtsp://admin:pw1@10.0.0.5/hall", name: "Hall", labels: { floor: "2" } });
    expect(created.status).toBe(201);
    expect(created.headers.get("location")).toBe(`${gw.publicUrl}/cameras/hall`);
    const rev = revisionOf(created.headers.get("etag"));
    expect(rev).toBe((await stored("hall"))!.revision);
    expect(created.body).toMatchObject({ id: "hall", url: "rtsp://***@10.0.0.5/hall", name: "Hall", enabled: true, tenant: "default", publish: "on-demand", ai: { enabled: false } });

    const again = await call(gw, "POST", "/cameras", { id: "hall", url: "rtsp://10.0.0.6/other" });
    expect(again.status).toBe(409);
    expect(again.body.error).toEqual({ code: "CONFLICT", message: expect.stringContaining("hall exists already") });
    expect((await stored("hall"))!.spec.url).toBe("rtsp://admin:pw1@10.0.0.5/hall");

    const read = await call(gw, "GET", "/cameras/hall");
    expect(read.status).toBe(200);
    expect(read.headers.get("etag")).toBe(`"${rev}"`);
    expect(read.body).toEqual(created.body);

    const gone = await call(gw, "DELETE", "/cameras/hall");
    expect(gone.status).toBe(204);
    expect(await stored("hall")).toBeUndefined();
    expect((await call(gw, "GET", "/cameras/hall")).status).toBe(404);
    expect((await call(gw, "DELETE", "/cameras/hall")).status).toBe(404);
    // The id is free again.
    expect((await call(gw, "POST", "/cameras", { id: "hall", url: "rtsp://10.0.0.5/hall" })).status).toBe(201);
  });

  it("PUT replaces, honours If-Match (412 on a stale ETag, nothing changed) and If-None-Match: *; a redacted URL written back keeps the credentials", async () => {
    const { gw, stored } = await cluster();
    const created = await call(gw, "POST", "/cameras", { id: "gate", url: "rtsp://admin:pw2@10.0.0.7/gate" });
    const etag1 = created.headers.get("etag")!;

    // GET, change, PUT back: the body GET gives is a valid PUT body.
    const read = (await call(gw, "GET", "/cameras/gate")).body;
    const put = await call(gw, "PUT", "/cameras/gate", { ...read, name: "Gate", publish: "always" }, { "if-match": etag1 });
    expect(put.status).toBe(200);
    const etag2 = put.headers.get("etag")!;
    expect(revisionOf(etag2)).toBeGreaterThan(revisionOf(etag1));
    expect(put.body).toMatchObject({ id: "gate", name: "Gate", publish: "always", url: "rtsp://***@10.0.0.7/gate" });
    expect((await stored("gate"))!.spec).toMatchObject({ url: "rtsp://admin:pw2@10.0.0.7/gate", name: "Gate" });

    const stale = await call(gw, "PUT", "/cameras/gate", { url: "rtsp://10.0.0.8/x" }, { "if-match": etag1 });
    expect(stale.status).toBe(412);
    expect(stale.body.error.code).toBe("PRECONDITION_FAILED");
    expect((await stored("gate"))!).toMatchObject({ revision: revisionOf(etag2), spec: { url: "rtsp://admin:pw2@10.0.0.7/gate" } });

    // Without If-Match: last writer wins, and the id in the body may be left out.
    const plain = await call(gw, "PUT", "/cameras/gate", { url: "rtsp://10.0.0.9/new", enabled: false });
    expect(plain.status).toBe(200);
    expect((await stored("gate"))!.spec).toMatchObject({ url: "rtsp://10.0.0.9/new", enabled: false });
    expect((await stored("gate"))!.spec.name).toBeUndefined();

    expect((await call(gw, "PUT", "/cameras/gate", { url: "rtsp://10.0.0.9/x" }, { "if-none-match": "*" })).status).toBe(409);
    const fresh = await call(gw, "PUT", "/cameras/dock", { url: "rtsp://10.0.0.9/dock" }, { "if-none-match": "*" });
    expect(fresh.status).toBe(200);
    expect((await stored("dock"))!.revision).toBe(revisionOf(fresh.headers.get("etag")));
    // If-Match: * means "only if it exists".
    expect((await call(gw, "PUT", "/cameras/ghost", { url: "rtsp://10.0.0.9/g" }, { "if-match": "*" })).status).toBe(412);
    expect(await stored("ghost")).toBeUndefined();
    expect((await call(gw, "PUT", "/cameras/dock", { url: "rtsp://10.0.0.9/dock2" }, { "if-match": "*" })).status).toBe(200);
  });

  it("two writers with the same ETag: exactly one wins, the other gets 412", async () => {
    const { gw, stored } = await cluster();
    const etag = (await call(gw, "POST", "/cameras", { id: "race", url: "rtsp://10.0.0.1/r" })).headers.get("etag")!;
    const results = await Promise.all(
      ["a", "b", "c", "d"].map((n) => call(gw, "PUT", "/cameras/race", { url: `rtsp://10.0.0.1/${n}` }, { "if-match": etag })),
    );
    expect(results.map((r) => r.status).sort()).toEqual([200, 412, 412, 412]);
    const winner = results.find((r) => r.status === 200)!;
    expect((await stored("race"))!.spec.url).toBe(winner.body.url);
    // PATCH races too: with If-Match one wins; without, every patch lands (retried on fresh data).
    const etag2 = winner.headers.get("etag")!;
    const patched = await Promise.all(["x", "y"].map((name) => call(gw, "PATCH", "/cameras/race", { name }, { "if-match": etag2 })));
    expect(patched.map((r) => r.status).sort()).toEqual([200, 412]);
    const labels = await Promise.all(["1", "2", "3"].map((v) => call(gw, "PATCH", "/cameras/race", { labels: { [`k${v}`]: v } })));
    expect(labels.map((r) => r.status)).toEqual([200, 200, 200]);
    const revisions = labels.map((r) => revisionOf(r.headers.get("etag")));
    expect(new Set(revisions).size).toBe(3);
  });

  it("PATCH merges (ai field by field), keeps the stored credentials, honours If-Match; DELETE with a stale If-Match changes nothing", async () => {
    const { gw, stored } = await cluster();
    const created = await call(gw, "POST", "/cameras", { id: "yard", url: "rtsp://op:pw3@10.0.0.3/yard", solutions: ["motion"], ai: { enabled: true, max_fps: 2 } });
    const etag1 = created.headers.get("etag")!;

    const patched = await call(gw, "PATCH", "/cameras/yard", { name: "Yard", ai: { timeout_ms: 500 } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ name: "Yard", solutions: ["motion"], ai: { enabled: true, max_fps: 2, timeout_ms: 500, motion_gate: true } });
    const etag2 = patched.headers.get("etag")!;
    expect((await stored("yard"))!).toMatchObject({ revision: revisionOf(etag2), spec: { url: "rtsp://op:pw3@10.0.0.3/yard", name: "Yard" } });

    const stale = await call(gw, "PATCH", "/cameras/yard", { name: "Stale" }, { "if-match": etag1 });
    expect(stale.status).toBe(412);
    expect((await stored("yard"))!.spec.name).toBe("Yard");
    const current = await call(gw, "PATCH", "/cameras/yard", { enabled: false }, { "if-match": etag2 });
    expect(current.status).toBe(200);
    expect(current.body.enabled).toBe(false);
    const etag3 = current.headers.get("etag")!;

    expect((await call(gw, "PATCH", "/cameras/ghost", { name: "x" })).status).toBe(404);

    const staleDelete = await call(gw, "DELETE", "/cameras/yard", undefined, { "if-match": etag2 });
    expect(staleDelete.status).toBe(412);
    expect(staleDelete.body.error.code).toBe("PRECONDITION_FAILED");
    expect((await stored("yard"))!.revision).toBe(revisionOf(etag3));
    expect((await call(gw, "DELETE", "/cameras/yard", undefined, { "if-match": etag3 })).status).toBe(204);
    expect(await stored("yard")).toBeUndefined();
  });

  it("a camera created without AI settings gets the answering node's defaults (AI_MAX_FPS, AI_TIMEOUT_MS)", async () => {
    const { gw } = await cluster({ AI_MAX_FPS: "3", AI_TIMEOUT_MS: "700" });
    const created = await call(gw, "POST", "/cameras", { id: "def", url: "rtsp://10.0.0.1/d", ai: { enabled: true } });
    expect(created.body.ai).toMatchObject({ enabled: true, max_fps: 3, timeout_ms: 700 });
    const explicit = await call(gw, "POST", "/cameras", { id: "own", url: "rtsp://10.0.0.1/o", ai: { max_fps: 5 } });
    expect(explicit.body.ai).toMatchObject({ max_fps: 5, timeout_ms: 700 });
  });

  it("bad input is 400 naming the field (413 for big bodies), and nothing changes", async () => {
    const { gw, stored } = await cluster();
    await call(gw, "POST", "/cameras", { id: "keep", url: "rtsp://10.0.0.1/keep" });
    const before = (await stored("keep"))!.revision;

    const cases: Array<[string, string, unknown, RegExp, Record<string, string>?]> = [
      ["POST", "/cameras", { url: "rtsp://10.0.0.1/x" }, /\bid: /],
      ["POST", "/cameras", { id: "bad.id", url: "rtsp://10.0.0.1/x" }, /\bid: /],
      ["POST", "/cameras", { id: "n1", url: "rtsp://10.0.0.1/x", colour: "red" }, /colour/],
      ["POST", "/cameras", { id: "n1", url: "rtsp://10.0.0.1/x", ai: { enabled: true, turbo: true } }, /ai.*turbo/],
      ["POST", "/cameras", { id: "n1", url: "rtsp://10.0.0.1/x", ai: { max_fps: 100 } }, /ai\.max_fps/],
      ["POST", "/cameras", { id: "n1", url: "ftp://10.0.0.1/x" }, /url/],
      ["POST", "/cameras", { id: "n1", url: "testsrc:?size=320x240" }, /ALLOW_LOCAL_SOURCES/],
      ["POST", "/cameras", { id: "n1", url: "rtsp://10.0.0.1/x", publish: "sometimes" }, /publish/],
      ["POST", "/cameras", [1, 2], /\(body\)/],
      ["POST", "/cameras", "{broken", /JSON/],
      ["PUT", "/cameras/keep", { url: "rtsp://10.0.0.1/x", enabled: "yes" }, /enabled/],
      ["PUT", "/cameras/keep", { id: "other", url: "rtsp://10.0.0.1/x" }, /id: must be the id of the path/],
      ["PUT", "/cameras/keep", { url: "rtsp://10.0.0.1/x", labels: { k: 5 } }, /labels\.k/],
      ["PUT", "/cameras/keep", { name: "no url" }, /url/],
      ["PUT", "/cameras/keep", { url: "rtsp://10.0.0.1/x" }, /If-Match/, { "if-match": "W/\"3\"" }],
      ["PUT", "/cameras/keep", { url: "rtsp://10.0.0.1/x" }, /If-Match/, { "if-match": "abc" }],
      ["PUT", "/cameras/keep", { url: "rtsp://10.0.0.1/x" }, /If-None-Match/, { "if-none-match": "\"3\"" }],
      ["PUT", "/cameras/bad.id", { url: "rtsp://10.0.0.1/x" }, /camera id "bad\.id" is invalid/],
      ["PATCH", "/cameras/keep", { id: "keep" }, /"id"/],
      ["PATCH", "/cameras/keep", { solutions: ["a b"] }, /solutions\.0/],
      ["PATCH", "/cameras/keep", { rtsp_transport: "quic" }, /rtsp_transport/],
      ["PATCH", "/cameras/keep", { name: "x" }, /If-Match/, { "if-match": "1, 2" }],
      ["PATCH", "/cameras/bad.id", { name: "x" }, /camera id "bad\.id" is invalid/],
      ["GET", "/cameras/bad.id", undefined, /camera id "bad\.id" is invalid/],
      ["DELETE", "/cameras/bad.id", undefined, /camera id "bad\.id" is invalid/],
      ["DELETE", "/cameras/keep", undefined, /If-Match/, { "if-match": "nope" }],
    ];
    for (const [method, path, body, message, headers] of cases) {
      const r = await call(gw, method, path, body, headers);
      expect(r.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(400);
      expect(r.body.error, `${method} ${path} ${JSON.stringify(body)}`).toEqual({ code: "INVALID_ARGUMENT", message: expect.stringMatching(message) });
    }
    const huge = JSON.stringify({ id: "huge", url: "rtsp://10.0.0.1/x", name: "x".repeat(2 * 1024 * 1024) });
    for (const [method, path] of [["POST", "/cameras"], ["PUT", "/cameras/keep"], ["PATCH", "/cameras/keep"]] as const) {
      const r = await call(gw, method, path, huge);
      expect(r.status, `${method} ${path}`).toBe(413);
      expect(r.body.error.code).toBe("PAYLOAD_TOO_LARGE");
    }
    // Credentials in a rejected URL never come back.
    const leaky = await call(gw, "POST", "/cameras", { id: "leak", url: "gopher://u:hunter2@10.0.0.1/x" });
    expect(leaky.status).toBe(400);
    expect(JSON.stringify(leaky.body)).not.toContain("hunter2");

    expect((await stored("keep"))!.revision).toBe(before);
    for (const id of ["n1", "huge", "other", "leak"]) expect(await stored(id), id).toBeUndefined();
  });
});

describe("control server: revision-checked writes (the gateway's If-Match)", () => {
  it("cameras.put and cameras.delete with an expected revision; replies carry the revision; plain put stays last-writer-wins", async () => {
    const { control, stored } = await cluster();
    const first = await control.putCamera({ id: "c1", url: "rtsp://10.0.0.1/a" });
    expect(first.revision).toBe((await stored("c1"))!.revision);
    expect((await control.getCamera("c1")).revision).toBe(first.revision);

    const second = await control.putCamera({ id: "c1", url: "rtsp://10.0.0.1/b" }, { expectedRevision: first.revision! });
    expect(second.revision).toBeGreaterThan(first.revision!);
    await expect(control.putCamera({ id: "c1", url: "rtsp://10.0.0.1/c" }, { expectedRevision: first.revision! })).rejects.toMatchObject({ code: "PRECONDITION_FAILED" });
    await expect(control.putCamera({ id: "c1", url: "rtsp://10.0.0.1/c" }, { expectedRevision: 0 })).rejects.toMatchObject({ code: "CONFLICT" });
    await expect(control.putCamera({ id: "c2", url: "rtsp://10.0.0.1/c" }, { expectedRevision: 12345 })).rejects.toMatchObject({ code: "PRECONDITION_FAILED" });
    expect(await stored("c2")).toBeUndefined();
    expect((await stored("c1"))!.spec.url).toBe("rtsp://10.0.0.1/b");

    const plain = await control.putCamera({ id: "c1", url: "rtsp://10.0.0.1/d" });
    expect(plain.revision).toBeGreaterThan(second.revision!);

    const stopped = await control.stopCamera("c1");
    expect(stopped.revision).toBe((await stored("c1"))!.revision);
    const started = await control.startCamera("c1");
    expect(started.revision).toBeGreaterThan(stopped.revision!);

    await expect(control.deleteCamera("c1", { expectedRevision: stopped.revision! })).rejects.toMatchObject({ code: "PRECONDITION_FAILED" });
    expect(await stored("c1")).toBeDefined();
    await control.deleteCamera("c1", { expectedRevision: started.revision! });
    expect(await stored("c1")).toBeUndefined();
    await expect(control.deleteCamera("c1", { expectedRevision: started.revision! })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(control.putCamera({ id: "c3", url: "rtsp://10.0.0.1/c" }, { expectedRevision: -1 })).rejects.toBeInstanceOf(CamfleetError);
  });

  it("a put of the redacted form of the stored URL keeps the stored URL; another URL replaces it", async () => {
    const { control, stored } = await cluster();
    await control.putCamera({ id: "sec", url: "rtsp://admin:pw4@10.0.0.4/s?token=t0k" });
    const { camera } = await control.getCamera("sec");
    expect(camera.url).toBe("rtsp://***@10.0.0.4/s?token=***");
    await control.putCamera({ ...camera, name: "renamed" });
    expect((await stored("sec"))!.spec).toMatchObject({ url: "rtsp://admin:pw4@10.0.0.4/s?token=t0k", name: "renamed" });
    await control.putCamera({ ...camera, url: "rtsp://***@10.0.0.99/s" });
    expect((await stored("sec"))!.spec.url).toBe("rtsp://***@10.0.0.99/s");
  });
});
