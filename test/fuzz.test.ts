// Property-based fuzz (fast-check) of every control subject, every HTTP route
// and the SDP bodies of WHIP/WHEP, against a real nats-server, a real
// `camfleet node` with sim actors running two cameras, and the gateway
// in-process. Every bad input must get a clear error (INVALID_ARGUMENT, or
// NOT_FOUND where a well-formed request names nothing; 4xx with a registry
// code on HTTP) and change nothing: after each property the camera list, the
// leases (holder and epoch), the spec revisions and the running cameras
// (STREAMING, same epoch) are as before, the node is alive and nothing logged
// an error.
//
// Runs are bounded and seeded: CAMFLEET_FUZZ_SEED picks the seed (default
// fixed, so a run repeats), CAMFLEET_FUZZ_RUNS multiplies the runs; fast-check
// prints the seed and the shrunk input of a failure, which is then kept below
// as a regression case.

import { Kvm, type KV } from "@nats-io/kv";
import { headers as natsHeaders, InvalidSubjectError, RequestError, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import type { Gateway } from "../gateway/index.ts";
import { FeedQuerySchema, FleetHistoryQuerySchema, HistoryQuerySchema } from "../gateway/routes/events.ts";
import { createLogger } from "../runtime/index.ts";
import {
  BUCKETS,
  CameraSpecPatchSchema,
  CameraSpecSchema,
  CONTROL_ERROR_CODES,
  control,
  EXPECTED_REVISION_HEADER,
  http as httpBodies,
  PUBLISHER_EPOCH_HEADER,
  PUBLISHER_NODE_HEADER,
  httpStatusOf,
  isValidId,
  subjects,
  type ControlErrorCode,
} from "../subjects/index.ts";
import { isAlive } from "./helpers/camfleet-process.ts";
import { connectTestClient, controlRequest, putCamera, readOwnership, simSpec, startFleetNode, type FleetNodeProcess } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats, type NatsHandle } from "./helpers/nats-harness.ts";
import { weriftOffer } from "./helpers/relay-peers.ts";
import { waitFor } from "./helpers/wait.ts";

const SEED = Number(process.env.CAMFLEET_FUZZ_SEED ?? 20261202);
/** Per property; enough to hit every generator branch many times, small enough for a 2-core machine. */
const RUNS = { control: 200, notFound: 60, subjectToken: 100, http: 250, sdp: 120 } as const;
/** Every request has a deadline: a hang is a failure, never a stuck suite. */
const REQUEST_DEADLINE_MS = 8000;

const NODE = "fz1";
const RUNNING = ["cam01", "cam02"] as const;
/** A disabled camera: nobody holds it, so a WHIP publisher without node headers reaches the SDP parser (a held camera answers 409 first). */
const IDLE = "idle";
const CAMERAS = [...RUNNING, IDLE];

let nats: NatsHandle;
let node: FleetNodeProcess;
let nc: NatsConnection;
let leasesKv: KV;
let gw: Gateway;
const gatewayLines: Array<Record<string, unknown>> = [];
let offers: { whep: string; whip: string };

const teardown: Array<() => Promise<void>> = [];
afterAll(async () => {
  const pids = [node?.pid, nats?.server.pid].filter((p): p is number => p !== undefined);
  for (const fn of teardown.reverse()) await fn();
  expect(pids.filter((pid) => isAlive(pid)), "processes still alive after teardown").toEqual([]);
});

beforeAll(async () => {
  const onCleanup = (fn: () => Promise<void>) => void teardown.push(fn);
  nats = await startNats({ onCleanup });
  node = await startFleetNode({ id: NODE, natsUrls: [nats.url], onCleanup });
  nc = await connectTestClient([nats.url], onCleanup);
  leasesKv = await new Kvm(nc).open(BUCKETS.leases);
  for (const id of RUNNING) await putCamera(nc, simSpec(id));
  await putCamera(nc, simSpec(IDLE, { enabled: false }));
  for (const id of RUNNING) {
    await waitFor(async () => (await statusOf(id))?.state === "STREAMING", { timeoutMs: 15_000, message: `${id} STREAMING` });
  }
  // The gateway's own error lines count too: an INTERNAL answer is logged at error level.
  const logger = createLogger({
    node: "gw-fuzz",
    level: "info",
    destination: { write: (line: string) => void gatewayLines.push(JSON.parse(line) as Record<string, unknown>) },
  });
  gw = await startTestGateway({ natsUrl: nats.url, nodeId: "gw-fuzz", logger, onCleanup });
  const whep = await weriftOffer("recvonly");
  const whip = await weriftOffer("sendonly");
  teardown.push(async () => {
    await whep.close();
    await whip.close();
  });
  offers = { whep: whep.sdp, whip: whip.sdp };
  before = await snapshot();
});

// ---------------------------------------------------------------- the snapshot

interface Snapshot {
  /** cameras.list as a client sees it: specs, owners, states. */
  list: unknown;
  /** camera → "node@epoch" (revisions change on every renewal, so they are left out). */
  leases: Record<string, string>;
  /** camera → KV revision of its spec. */
  revisions: Record<string, number>;
  /** running camera → "STATE@epoch" from its owner's status reply. */
  running: Record<string, string>;
}
let before: Snapshot;

async function statusOf(id: string): Promise<{ state: string; epoch: number } | undefined> {
  try {
    return await controlRequest(nc, "cameraStatus", subjects.ctl.cameraStatus(id), {});
  } catch {
    return undefined;
  }
}

async function snapshot(): Promise<Snapshot> {
  const { cameras } = await controlRequest(nc, "camerasList", subjects.ctl.camerasList, {});
  const keys: string[] = [];
  for await (const k of await leasesKv.keys()) keys.push(k);
  const owners = await readOwnership(leasesKv, keys.sort());
  const leases = Object.fromEntries([...owners].map(([camera, o]) => [camera, `${o.node}@${o.epoch}`]));
  const revisions: Record<string, number> = {};
  for (const { camera } of cameras) revisions[camera.id] = (await controlRequest(nc, "camerasGet", subjects.ctl.camerasGet, { id: camera.id })).revision ?? -1;
  const running: Record<string, string> = {};
  for (const id of RUNNING) {
    const s = await statusOf(id);
    running[id] = s === undefined ? "not running" : `${s.state}@${s.epoch}`;
  }
  return { list: cameras, leases, revisions, running };
}

function errorLines(lines: ReadonlyArray<Record<string, unknown>>): Array<Record<string, unknown>> {
  return lines.filter((l) => l.level === "error" || l.level === "fatal" || (typeof l.level === "number" && l.level >= 50));
}

/** After each property: nothing changed, the node lives, nobody logged an error. */
async function expectNothingChanged(): Promise<void> {
  expect(node.alive(), `node ${NODE} died:\n${node.proc.stderr()}`).toBe(true);
  expect(await snapshot()).toEqual(before);
  expect(before.running).toEqual({ cam01: expect.stringMatching(/^STREAMING@[1-9]/), cam02: expect.stringMatching(/^STREAMING@[1-9]/) });
  expect(errorLines(node.proc.lines)).toEqual([]);
  expect(errorLines(gatewayLines)).toEqual([]);
}

/** CAMFLEET_FUZZ_RUNS multiplies every property's runs, for a longer hunt by hand (default 1). */
const RUNS_FACTOR = Math.max(1, Number(process.env.CAMFLEET_FUZZ_RUNS ?? 1));
const params = (runs: number): fc.Parameters<unknown> => ({ numRuns: Math.round(runs * RUNS_FACTOR), seed: SEED, endOnFailure: false });

// ---------------------------------------------------------------- arbitraries

/** Characters an id may not have: subject syntax, whitespace, path syntax, non-ASCII, control. */
const ID_BREAKERS = [".", "*", ">", " ", "\t", "/", "?", "#", "%", "é", "日", "\u0000", "\u00a0", "$", ":", "+", "=", "\\", '"'];
const idPart = fc.stringMatching(/^[A-Za-z0-9_-]{0,20}$/);
/** Ids that break the id rule: empty, too long, or with a forbidden character. */
const badId: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom("", ".", "..", "*", ">", " ", "a.b", "cam01.start", "cam01 ", "-".repeat(65)),
  fc.stringMatching(/^[A-Za-z0-9_-]{65,120}$/),
  fc.tuple(idPart, fc.constantFrom(...ID_BREAKERS), idPart).map(([a, c, b]) => a + c + b),
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }).filter((s) => !isValidId(s)),
);
/** Well-formed ids that name nothing here. */
const unknownId = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/).filter((s) => !CAMERAS.includes(s) && s !== NODE && !s.startsWith("gw-"));

/** Values of every JSON type, for "wrong type" and "random body". */
const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(null, true, false, 0, -1, 1e308, "", "x", [], {}, [null], { id: "cam01" }),
  fc.string({ maxLength: 300 }),
);
/** A string key no schema of ours knows. */
const unknownKey = fc.oneof(fc.stringMatching(/^[A-Za-z_]{1,16}$/), fc.constantFrom("__proto__", "constructor", "ID", "Url", "ai.enabled", ""));

/** A UTF-8 body, as a node decodes it: undefined when it is no JSON at all. */
function decodedJson(bytes: Uint8Array): { value: unknown } | undefined {
  if (bytes.length === 0) return { value: {} }; // the contract: an empty body means {}
  try {
    return { value: JSON.parse(new TextDecoder().decode(bytes)) };
  } catch {
    return undefined;
  }
}

/** Bytes that are not JSON: random bytes, cut-off JSON, JSON with trailing garbage, comments. */
const nonJsonBytes: fc.Arbitrary<Uint8Array> = fc
  .oneof(
    fc.uint8Array({ minLength: 1, maxLength: 512 }),
    fc.jsonValue().map((v) => {
      const s = JSON.stringify(v) ?? "null";
      return new TextEncoder().encode(s.slice(0, Math.max(1, s.length - 1)) + (s.length === 1 ? "}" : ""));
    }),
    fc.tuple(fc.jsonValue(), fc.constantFrom("}", "]", ",", "x", "/*c*/", "\u0000")).map(([v, tail]) => new TextEncoder().encode(`${JSON.stringify(v)}${tail}`)),
    fc.constantFrom("{", "[", "{'id':'cam01'}", "{id: cam01}", "NaN", "undefined", "\ufeff{}x", "{\"id\":\"cam01\",}").map((s) => new TextEncoder().encode(s)),
  )
  .filter((b) => decodedJson(b) === undefined);

/** A huge string that still fits one NATS message (max_payload 1 MiB) with the rest of the body. */
const hugeString = fc
  .integer({ min: 70_000, max: 900_000 })
  .chain((n) => fc.constantFrom("x", "é", ".", "\u0000").map((c) => c.repeat(Math.floor(n / Buffer.byteLength(JSON.stringify(c).slice(1, -1)))))); // bytes as sent: JSON-escaped

/**
 * Bodies the schema refuses, built around a valid `base`: random JSON, a
 * field of the wrong type, an unknown field, a bad id in an id field, a huge
 * string. Whatever is generated, only schema-invalid bodies are kept (a
 * generator that happens to build a valid one is skipped), so a success
 * reply is always a finding.
 */
function badJsonBody(schema: z.ZodType, base: Record<string, unknown>, idFields: string[] = []): fc.Arbitrary<unknown> {
  const keys = Object.keys(base);
  const parts: Array<fc.Arbitrary<unknown>> = [
    anyJson,
    fc.tuple(unknownKey, anyJson).map(([k, v]) => Object.defineProperty({ ...base }, k, { value: v, enumerable: true, writable: true, configurable: true })),
  ];
  if (keys.length > 0) {
    parts.push(fc.tuple(fc.constantFrom(...keys), anyJson).map(([k, v]) => ({ ...base, [k]: v })));
    parts.push(fc.constantFrom(...keys).chain((k) => fc.constant(Object.fromEntries(Object.entries(base).filter(([key]) => key !== k)))));
    const stringKeys = keys.filter((k) => typeof base[k] === "string");
    if (stringKeys.length > 0) parts.push(fc.tuple(fc.constantFrom(...stringKeys), hugeString).map(([k, v]) => ({ ...base, [k]: v })));
  }
  if (idFields.length > 0) parts.push(fc.tuple(fc.constantFrom(...idFields), badId).map(([k, v]) => ({ ...base, [k]: v })));
  if ("ai" in base) parts.push(fc.tuple(unknownKey, anyJson).map(([k, v]) => ({ ...base, ai: { ...(base.ai as object), [k]: v } })));
  return fc.oneof(...parts).filter((body) => !schema.safeParse(body).success);
}

/** A full, valid spec of cam01 as a client would write it back. */
const CAM01_SPEC = CameraSpecSchema.parse({ id: "cam01", url: "rtsp://127.0.0.1/sim/cam01", name: "front door", labels: { floor: "1" } });

// ---------------------------------------------------------------- NATS side

type CtlOutcome =
  | { kind: "reply"; reply: { ok?: unknown; error?: { code?: unknown; message?: unknown } } }
  | { kind: "noResponders" }
  | { kind: "refused"; message: string };

/** One control request; a timeout (a hang, or a node that died) rejects. */
async function ctl(subject: string, payload: Uint8Array | string, headers?: MsgHdrs): Promise<CtlOutcome> {
  try {
    const msg = await nc.request(subject, payload, { timeout: REQUEST_DEADLINE_MS, ...(headers !== undefined ? { headers } : {}) });
    return { kind: "reply", reply: JSON.parse(msg.string()) as Record<string, never> };
  } catch (err) {
    if (err instanceof RequestError && err.isNoResponders()) return { kind: "noResponders" };
    // nats.js refuses a subject with whitespace before anything is sent.
    if (err instanceof InvalidSubjectError) return { kind: "refused", message: err.message };
    throw err;
  }
}

function expectErrorReply(outcome: CtlOutcome, code: ControlErrorCode, what: string): void {
  expect(outcome.kind, what).toBe("reply");
  if (outcome.kind !== "reply") return;
  expect(outcome.reply, what).toMatchObject({ ok: false, error: { code, message: expect.any(String) } });
}

interface ControlTarget {
  op: string;
  subject: string;
  schema: z.ZodType;
  /** A valid request (never sent as it is). */
  base: Record<string, unknown>;
  idFields?: string[];
}

/** Every control subject, pointed at things that exist, so a bad body that slipped through would change something. */
const CONTROL_TARGETS: ControlTarget[] = [
  { op: "cameras.put", subject: subjects.ctl.camerasPut, schema: CameraSpecSchema, base: CAM01_SPEC, idFields: ["id", "tenant", "site"] },
  { op: "cameras.get", subject: subjects.ctl.camerasGet, schema: control.camerasGet.request, base: { id: "cam01" }, idFields: ["id"] },
  { op: "cameras.list", subject: subjects.ctl.camerasList, schema: control.camerasList.request, base: { tenant: "default", site: "default", limit: 10, after: "cam01" }, idFields: ["tenant", "site", "after"] },
  { op: "cameras.delete", subject: subjects.ctl.camerasDelete, schema: control.camerasDelete.request, base: { id: "cam01" }, idFields: ["id"] },
  { op: "nodes.list", subject: subjects.ctl.nodesList, schema: control.nodesList.request, base: {} },
  { op: "node.drain", subject: subjects.ctl.nodeDrain(NODE), schema: control.nodeDrain.request, base: {} },
  { op: "camera.start", subject: subjects.ctl.cameraStart("cam01"), schema: CameraSpecPatchSchema, base: { url: "rtsp://127.0.0.1/sim/cam01", name: "n", solutions: [], ai: { enabled: false } }, idFields: ["tenant", "site"] },
  { op: "camera.start (idle)", subject: subjects.ctl.cameraStart(IDLE), schema: CameraSpecPatchSchema, base: { publish: "always", rtsp_transport: "udp" } },
  { op: "camera.stop", subject: subjects.ctl.cameraStop("cam02"), schema: control.cameraStop.request, base: {} },
  { op: "camera.status", subject: subjects.ctl.cameraStatus("cam01"), schema: control.cameraStatus.request, base: {} },
  { op: "camera.viewers", subject: subjects.ctl.cameraViewers("cam02"), schema: control.cameraViewers.request, base: { gateway: "gw-x", viewers: 3, ttl_ms: 5000 }, idFields: ["gateway"] },
];

/** A request body as bytes: JSON of a bad value, or bytes that are no JSON. */
function badPayload(target: ControlTarget): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 4, arbitrary: badJsonBody(target.schema, target.base, target.idFields).map((v) => new TextEncoder().encode(JSON.stringify(v) ?? "null")) },
    { weight: 1, arbitrary: nonJsonBytes },
  ).filter((bytes) => {
    // JSON.stringify drops undefined and turns -0 into 0: judge the bytes the node will read.
    const decoded = decodedJson(bytes);
    return decoded === undefined || !target.schema.safeParse(decoded.value).success;
  });
}

/** Camfleet-Expected-Revision values that are not a revision (after the trimming a header may get). */
const badRevisionHeader = fc
  .oneof(fc.string({ unit: "binary-ascii", minLength: 1, maxLength: 20 }), fc.constantFrom("-1", "1.5", "1e3", "0x10", "١٢", "9".repeat(16), "5 6", "+5"))
  .filter((v) => !/[\r\n\0]/.test(v) && v.trim() !== "" && !/^\d{1,15}$/.test(v.trim()));

/** `camfleet.ctl.camera.<id>.<verb>` with any token for the id, from the builder (subjects/ spells the subject). */
function cameraSubjectWith(builder: (id: string) => string, token: string): string {
  // A replacer function: a replacement string would read `$&` in the token as a pattern.
  return builder("PLACEHOLDER").replace(".PLACEHOLDER.", () => `.${token}.`);
}

describe(`fuzz (seed ${SEED}): control subjects`, () => {
  it("a bad body on any control subject is INVALID_ARGUMENT and changes nothing", async () => {
    const target = fc.constantFrom(...CONTROL_TARGETS).chain((t) => badPayload(t).map((payload) => ({ t, payload })));
    await fc.assert(
      fc.asyncProperty(target, async ({ t, payload }) => {
        expectErrorReply(await ctl(t.subject, payload), "INVALID_ARGUMENT", `${t.op} ${new TextDecoder().decode(payload.slice(0, 200))}`);
      }),
      params(RUNS.control),
    );
    await expectNothingChanged();
  });

  it("a Camfleet-Expected-Revision that is no revision is INVALID_ARGUMENT, even with a valid body", async () => {
    const writes = fc.constantFrom(
      { op: "cameras.put", subject: subjects.ctl.camerasPut, body: CAM01_SPEC },
      { op: "cameras.delete", subject: subjects.ctl.camerasDelete, body: { id: "cam01" } },
    );
    await fc.assert(
      fc.asyncProperty(writes, badRevisionHeader, async (w, value) => {
        const h = natsHeaders();
        h.set(EXPECTED_REVISION_HEADER, value);
        expectErrorReply(await ctl(w.subject, JSON.stringify(w.body), h), "INVALID_ARGUMENT", `${w.op} with header ${JSON.stringify(value)}`);
      }),
      params(RUNS.notFound),
    );
    await expectNothingChanged();
  });

  it("a well-formed request that names nothing: NOT_FOUND (get, delete, stop), INVALID_ARGUMENT (start without url), no responders (owner-only subjects)", async () => {
    // get/delete/stop look the camera up: NOT_FOUND. start of a new camera needs a url to create it: INVALID_ARGUMENT.
    // status, viewers and drain are served only by the owner (the named node), so nobody subscribes: no responders,
    // which the ControlClient reports as NOT_FOUND for status and drain (docs/contract.md section 3).
    await fc.assert(
      fc.asyncProperty(unknownId, fc.constantFrom("get", "delete", "stop", "start", "status", "viewers", "drain"), async (id, op) => {
        const what = `${op} ${id}`;
        await expectNamesNothing(op, id, what);
      }),
      params(RUNS.notFound),
    );
    await expectNothingChanged();
  });

  async function expectNamesNothing(op: string, id: string, what: string): Promise<void> {
    if (op === "get") expectErrorReply(await ctl(subjects.ctl.camerasGet, JSON.stringify({ id })), "NOT_FOUND", what);
    else if (op === "delete") expectErrorReply(await ctl(subjects.ctl.camerasDelete, JSON.stringify({ id })), "NOT_FOUND", what);
    else if (op === "stop") expectErrorReply(await ctl(subjects.ctl.cameraStop(id), "{}"), "NOT_FOUND", what);
    else if (op === "start") expectErrorReply(await ctl(subjects.ctl.cameraStart(id), JSON.stringify({ name: "x", solutions: [] })), "INVALID_ARGUMENT", what);
    else if (op === "status") expect(await ctl(subjects.ctl.cameraStatus(id), "{}"), what).toEqual({ kind: "noResponders" });
    else if (op === "viewers") expect(await ctl(subjects.ctl.cameraViewers(id), JSON.stringify({ gateway: "gw-x", viewers: 1, ttl_ms: 5000 })), what).toEqual({ kind: "noResponders" });
    else expect(await ctl(subjects.ctl.nodeDrain(id), "{}"), what).toEqual({ kind: "noResponders" });
  }

  it("a bad id in the subject token of camera.<id>.start/stop/status/viewers never reaches a camera", async () => {
    const verbs = {
      start: subjects.ctl.cameraStart,
      stop: subjects.ctl.cameraStop,
      status: subjects.ctl.cameraStatus,
      viewers: subjects.ctl.cameraViewers,
    } as const;
    // Bodies a good id would accept, so only the token can be the reason for a refusal.
    const validBody: Record<keyof typeof verbs, string> = {
      start: JSON.stringify({ url: "rtsp://127.0.0.1/sim/x" }),
      stop: "{}",
      status: "{}",
      viewers: JSON.stringify({ gateway: "gw-x", viewers: 1, ttl_ms: 5000 }),
    };
    await fc.assert(
      fc.asyncProperty(badId, fc.constantFrom(...(Object.keys(verbs) as Array<keyof typeof verbs>)), async (id, verb) => {
        const subject = cameraSubjectWith(verbs[verb], id);
        const outcome = await ctl(subject, validBody[verb]);
        const what = `${verb} ${JSON.stringify(subject)}: ${JSON.stringify(outcome)}`;
        if (outcome.kind === "refused") {
          // nats.js refuses whitespace in a subject before sending anything.
          expect(id, what).toMatch(/\s/);
        } else if (outcome.kind === "noResponders") {
          // Several tokens (a '.') or an empty one match no subscription; status and viewers are subscribed per good id only.
          expect(verb === "status" || verb === "viewers" || id.includes(".") || id === "", what).toBe(true);
        } else {
          // One token that the start/stop wildcard caught: the node validates it.
          expectErrorReply(outcome, "INVALID_ARGUMENT", what);
        }
      }),
      params(RUNS.subjectToken),
    );
    await expectNothingChanged();
  });
});

// ---------------------------------------------------------------- HTTP side

interface HttpCase {
  what: string;
  method: string;
  path: string;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  /** Statuses this case may answer besides the error table's (405 of PATCH on a session). */
  alsoAllowed?: number[];
}

interface HttpAnswer {
  status: number;
  text: string;
  headers: Headers;
}

async function send(c: HttpCase): Promise<HttpAnswer> {
  const res = await fetch(`${gw.url}${c.path}`, {
    method: c.method,
    headers: c.headers ?? {},
    ...(c.body !== undefined ? { body: c.body } : {}),
    redirect: "manual",
    signal: AbortSignal.timeout(REQUEST_DEADLINE_MS),
  });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/** 4xx with `{error: {code, message}}`, a code of subjects/errors.ts whose status is the one answered. */
function expectHttpError(c: HttpCase, a: HttpAnswer): void {
  const what = `${c.what}: ${c.method} ${c.path.slice(0, 200)} → ${a.status} ${a.text.slice(0, 300)}`;
  expect(a.status, what).toBeGreaterThanOrEqual(400);
  expect(a.status, what).toBeLessThan(500);
  let body: { error?: { code?: string; message?: unknown } } = {};
  expect(() => (body = JSON.parse(a.text) as typeof body), what).not.toThrow();
  expect(body, what).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
  const code = body.error!.code as ControlErrorCode;
  expect(Object.keys(CONTROL_ERROR_CODES), what).toContain(code);
  if (!(c.alsoAllowed ?? []).includes(a.status)) expect(httpStatusOf(code), what).toBe(a.status);
}

const path = (id: string) => encodeURIComponent(id);
const json = (v: unknown) => JSON.stringify(v) ?? "null";
const JSON_TYPE = { "content-type": "application/json" };

/** Content types no JSON route parses (fastify answers 415, which is our 400). */
const wrongContentType = fc.constantFrom(
  "text/plain",
  "text/html",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/xml",
  "application/octet-stream",
  "application/sdp",
  "text/json",
  "application/jsonx",
  "image/png",
  "garbage",
);

/** Query strings a route's strict schema refuses: unknown parameters, bad ids, bad numbers, repeats. */
function badQuery(schema: z.ZodType, keys: string[]): fc.Arbitrary<string> {
  const value = fc.oneof(badId, fc.string({ maxLength: 80 }), fc.constantFrom("0", "-1", "1001", "1e3", "abc", "", "all", "newest", "30s", "9".repeat(20)));
  const pair = fc.tuple(fc.oneof(fc.constantFrom(...keys), unknownKey.filter((k) => k !== "")), value);
  return fc
    .array(pair, { minLength: 1, maxLength: 4 })
    .filter((pairs) => {
      // What the route sees: repeated keys become arrays (fastify's query parser).
      const query: Record<string, unknown> = {};
      for (const [k, v] of pairs) {
        if (k === "__proto__" || k === "constructor") return true; // never a known parameter
        query[k] = k in query ? ([] as unknown[]).concat(query[k], v) : v;
      }
      return !schema.safeParse(query).success;
    })
    .map((pairs) => new URLSearchParams(pairs).toString());
}

/** If-Match values that are neither `*` nor one strong ETag (after the trimming fetch does). */
const badIfMatch = fc
  .oneof(
    fc.string({ unit: "binary-ascii", minLength: 1, maxLength: 24 }),
    fc.constantFrom('W/"5"', '"1", "2"', '"0"', '"-1"', "5", '"abc"', '""', '"1.0"', "**", '"9999999999999999"'),
  )
  .filter((v) => /^[\x20-\x7e]+$/.test(v) && v.trim() !== "" && v.trim() !== "*" && !/^"[1-9]\d{0,14}"$/.test(v.trim()));

/** Whether PUT /cameras/{id} takes this body: `id` may be left out (the path's is used) or must be the path's. */
function validPut(body: unknown, id: string): boolean {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return false;
  const given = (body as { id?: unknown }).id;
  return (given === undefined || given === id) && CameraSpecSchema.safeParse({ ...body, id }).success;
}

/**
 * An id for a path: bad, or well-formed but unknown. "." and ".." are left
 * out: the client (fetch, per the URL standard) resolves them as dot segments
 * before sending, so the gateway never sees them as an id.
 */
const pathBadId = badId.filter((id) => id !== "." && id !== "..");
const pathId = fc.oneof(pathBadId, unknownId);

const httpCases: fc.Arbitrary<HttpCase> = fc.oneof(
  // Reads by id: a bad id is 400, an unknown one 404 (or a 404 of no route, when the id is empty or a dot segment).
  fc.tuple(pathId, fc.constantFrom("/cameras/%s", "/cameras/%s/status", "/webrtc/%s/urls")).map(([id, p]) => ({ what: "read by id", method: "GET", path: p.replace("%s", () => path(id)) })),
  pathBadId.map((id) => ({ what: "detections of a bad id", method: "GET", path: `/cameras/${path(id)}/detections` })),
  badId.map((id) => ({ what: "relay stats of a bad id", method: "GET", path: `/webrtc/stats?id=${path(id)}` })),
  // Writes by id with an id that is bad or names nothing (stop and delete of an unknown camera: 404; drain of no node: 404).
  fc.tuple(pathId, fc.constantFrom("POST /cameras/%s/stop", "DELETE /cameras/%s", "POST /nodes/%s/drain", "DELETE /whep/%s/s1", "DELETE /whip/%s/s1")).map(([id, mp]) => {
    const [method, p] = mp.split(" ") as [string, string];
    return { what: "write by id", method, path: p.replace("%s", () => path(id)) };
  }),
  pathBadId.map((id) => ({ what: "PUT with a bad id", method: "PUT", path: `/cameras/${path(id)}`, body: json({ ...CAM01_SPEC, id: undefined }), headers: JSON_TYPE })),
  pathBadId.map((id) => ({ what: "PATCH with a bad id", method: "PATCH", path: `/cameras/${path(id)}`, body: json({ name: "x" }), headers: JSON_TYPE })),
  pathBadId.map((id) => ({ what: "legacy start with a bad id", method: "POST", path: `/cameras/${path(id)}/start`, body: json({ stream_url: "rtsp://10.0.0.1/a" }), headers: JSON_TYPE })),
  fc.tuple(pathBadId, fc.constantFrom("whip", "whep")).map(([id, kind]) => ({ what: `${kind} with a bad id`, method: "POST", path: `/${kind}/${path(id)}`, body: "v=0\r\n", headers: { "content-type": "application/sdp" } })),
  pathBadId.map((id) => ({ what: "offer with a bad id", method: "POST", path: `/cameras/${path(id)}/webrtc/offer`, body: json({ sdp: "v=0", type: "offer" }), headers: JSON_TYPE })),
  // Bad JSON bodies on every route that takes one, aimed at cameras that exist.
  badJsonBody(CameraSpecSchema, CAM01_SPEC, ["id", "tenant", "site"]).map((b) => ({ what: "POST /cameras bad spec", method: "POST", path: "/cameras", body: json(b), headers: JSON_TYPE })),
  badJsonBody(CameraSpecSchema, CAM01_SPEC, ["tenant", "site"])
    .filter((b) => !validPut(b, "cam01"))
    .map((b) => ({ what: "PUT bad spec", method: "PUT", path: "/cameras/cam01", body: json(b), headers: JSON_TYPE })),
  badJsonBody(CameraSpecPatchSchema, { name: "n", publish: "always", ai: { enabled: true } }, ["tenant", "site"]).map((b) => ({ what: "PATCH bad patch", method: "PATCH", path: "/cameras/cam02", body: json(b), headers: JSON_TYPE })),
  badJsonBody(httpBodies.legacyStartRequest, { stream_url: "rtsp://10.0.0.1/a", solutions: ["motion"] }).map((b) => ({ what: "legacy start bad body", method: "POST", path: "/cameras/cam01/start", body: json(b), headers: JSON_TYPE })),
  badJsonBody(httpBodies.offer, { sdp: "v=0\r\n", type: "offer" }).map((b) => ({ what: "offer bad body", method: "POST", path: "/cameras/cam01/webrtc/offer", body: json(b), headers: JSON_TYPE })),
  // Bytes that are no JSON, with a JSON content type: 400 from the parser, on writes that would otherwise change a camera.
  fc.tuple(nonJsonBytes, fc.constantFrom("POST /cameras", "PUT /cameras/cam01", "PATCH /cameras/cam01", "POST /cameras/cam01/start", "POST /cameras/cam01/stop", "POST /cameras/cam01/webrtc/offer")).map(([bytes, mp]) => {
    const [method, p] = mp.split(" ") as [string, string];
    return { what: "no JSON", method, path: p, body: bytes, headers: JSON_TYPE };
  }),
  // A valid body under a content type no JSON route parses.
  fc.tuple(wrongContentType, fc.constantFrom("POST /cameras", "PUT /cameras/cam01", "PATCH /cameras/cam01", "POST /cameras/cam01/start")).map(([type, mp]) => {
    const [method, p] = mp.split(" ") as [string, string];
    const body = method === "PATCH" ? { name: "renamed" } : p.endsWith("/start") ? { stream_url: "rtsp://10.0.0.1/changed" } : { ...CAM01_SPEC, id: p === "/cameras" ? "fresh" : "cam01", name: "renamed" };
    return { what: `content type ${type}`, method, path: p, body: json(body), headers: { "content-type": type } };
  }),
  // Larger than the route takes: 413 before anything is read.
  fc.integer({ min: 129 * 1024, max: 400 * 1024 }).map((n) => ({ what: "JSON body too large", method: "PUT", path: "/cameras/cam01", body: json({ ...CAM01_SPEC, name: "x".repeat(n) }), headers: JSON_TYPE })),
  // Bad revision headers with a valid write: 400 (or 412 for an ETag of a revision that is not the camera's).
  fc.tuple(badIfMatch, fc.constantFrom("PUT", "PATCH", "DELETE")).map(([tag, method]) => ({
    what: `If-Match ${JSON.stringify(tag)}`,
    method,
    path: "/cameras/cam01",
    ...(method === "DELETE" ? {} : { body: json(method === "PATCH" ? { name: "renamed" } : { ...CAM01_SPEC, name: "renamed" }), headers: { ...JSON_TYPE, "if-match": tag } }),
    ...(method === "DELETE" ? { headers: { "if-match": tag } } : {}),
  })),
  fc.string({ unit: "binary-ascii", maxLength: 12 }).filter((v) => /^[\x20-\x7e]*$/.test(v)).map((v) => ({ what: "If-None-Match on DELETE", method: "DELETE", path: "/cameras/cam01", headers: { "if-none-match": v || "*" } })),
  fc.constant({ what: "If-None-Match * on PUT of an existing camera", method: "PUT", path: "/cameras/cam01", body: json({ ...CAM01_SPEC, name: "renamed" }), headers: { ...JSON_TYPE, "if-none-match": "*" } }),
  // Strict queries.
  badQuery(httpBodies.camerasListQuery, ["tenant", "site", "limit", "after"]).map((q) => ({ what: "GET /cameras query", method: "GET", path: `/cameras?${q}` })),
  badQuery(FeedQuerySchema, ["camera", "tenant", "site", "type", "since", "last_event_id"]).chain((q) => fc.constantFrom("/events", "/ws").map((p) => ({ what: "feed query", method: "GET", path: `${p}?${q}` }))),
  badQuery(HistoryQuerySchema, ["since", "until", "limit", "order", "cursor"]).map((q) => ({ what: "history query", method: "GET", path: `/cameras/cam01/detections?${q}` })),
  badQuery(FleetHistoryQuerySchema, ["since", "until", "limit", "order", "cursor", "camera", "tenant", "site", "label"]).map((q) => ({ what: "fleet history query", method: "GET", path: `/detections?${q}` })),
  // Trickle ICE is not supported: 405 whatever the body.
  fc.tuple(fc.constantFrom("whip", "whep"), fc.string({ maxLength: 100 })).map(([kind, body]) => ({ what: "PATCH session", method: "PATCH", path: `/${kind}/cam01/s1`, body, headers: { "content-type": "application/trickle-ice-sdpfrag" }, alsoAllowed: [405] })),
  // Percent-encoding that does not decode, sent as it is.
  fc.tuple(idPart, fc.constantFrom("%", "%E0%A4%A", "%ZZ", "%C3", "%00", "%FF%FE"), fc.constantFrom("/cameras/%s", "/cameras/%s/status", "/whep/%s", "/webrtc/%s/urls")).map(([id, junk, p]) => ({
    what: "bad percent-encoding",
    method: p === "/whep/%s" ? "POST" : "GET",
    path: p.replace("%s", () => id + junk),
  })),
  // Routes and methods that do not exist.
  fc.tuple(fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"), fc.array(fc.stringMatching(/^[A-Za-z0-9_.~-]{1,12}$/), { minLength: 1, maxLength: 4 })).map(([method, segs]) => ({ what: "no such route", method, path: `/nope/${segs.join("/")}` })),
  fc.constantFrom("PUT /health", "DELETE /cameras", "POST /webrtc/stats", "GET /nodes/fz1/drain", "PUT /whep/cam01", "GET /whip/cam01").map((mp) => {
    const [method, p] = mp.split(" ") as [string, string];
    return { what: "wrong method", method, path: p };
  }),
);

describe(`fuzz (seed ${SEED}): HTTP routes`, () => {
  it("regression: a path parameter over 100 characters, or a bad percent-encoding, is 400 INVALID_ARGUMENT in camfleet's error shape", async () => {
    // Found by this fuzz: fastify's router answered these itself (414 FST_ERR_MAX_PARAM_LENGTH, 400 FST_ERR_BAD_URL)
    // with its own body, {error: "Bad Request", code: "FST_…", statusCode}, outside the error registry.
    for (const c of [
      { what: "id of 101 characters", method: "GET", path: `/cameras/${"a".repeat(101)}/status` },
      { what: "id of 120 characters on a write", method: "DELETE", path: `/cameras/${"a-".repeat(60)}` },
      { what: "bad percent-encoding", method: "GET", path: "/cameras/%E0%A4%A" },
    ]) {
      const a = await send(c);
      expectHttpError(c, a);
      expect(a.status, c.what).toBe(400);
      expect((JSON.parse(a.text) as { error: { code: string } }).error.code, c.what).toBe("INVALID_ARGUMENT");
      expect(a.headers.get("cache-control"), c.what).toBe("no-store");
    }
    await expectNothingChanged();
  });

  it("every bad request is a 4xx with {error: {code, message}} of the registry, never a 5xx, and changes nothing", async () => {
    await fc.assert(
      fc.asyncProperty(httpCases, async (c) => {
        expectHttpError(c, await send(c));
      }),
      params(RUNS.http),
    );
    await expectNothingChanged();
  });
});

describe(`fuzz (seed ${SEED}): the node's ops port`, () => {
  it("an unknown path or a wrong method on the node's ops server is 404 or 405 with {error: {code, message}}; POST /drain is never reached", async () => {
    const { nodes } = await controlRequest(nc, "nodesList", subjects.ctl.nodesList, {});
    const ops = nodes.find((n) => n.node === NODE)?.http_url;
    expect(ops, "the node's ops URL in its NodeInfo").toBeTruthy();
    const known = ["/healthz", "/readyz", "/metrics", "/drain"];
    const requests = fc.oneof(
      // A wrong method on a known path (POST /drain would drain: the one request left out).
      fc.tuple(fc.constantFrom("POST", "PUT", "DELETE", "PATCH"), fc.constantFrom(...known)).filter(([m, p]) => !(m === "POST" && p === "/drain")),
      fc.tuple(fc.constantFrom("GET", "DELETE", "PUT"), fc.constantFrom("/drain")),
      // Paths that are no route ("/drain/x", "/healthz/", "//drain", a query does not make a route).
      fc.tuple(
        fc.constantFrom("GET", "POST", "PUT", "DELETE"),
        fc.oneof(
          fc.array(fc.stringMatching(/^[A-Za-z0-9_~-]{1,12}$/), { minLength: 1, maxLength: 3 }).map((segs) => `/${segs.join("/")}`).filter((p) => !known.includes(p)),
          fc.constantFrom(...known).map((p) => `${p}/x`),
          fc.constantFrom("/drain/", "/healthz/", "//drain", "/DRAIN", "/drain%00", "/"),
        ),
      ),
    );
    await fc.assert(
      fc.asyncProperty(requests, async ([method, p]) => {
        const c: HttpCase = { what: "ops", method, path: p };
        const res = await fetch(`${ops}${p}`, { method, signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) });
        const a = { status: res.status, text: await res.text(), headers: res.headers };
        expect([404, 405], `${method} ${p} → ${a.status} ${a.text.slice(0, 200)}`).toContain(a.status);
        expectHttpError({ ...c, alsoAllowed: [405] }, a);
      }),
      params(RUNS.notFound),
    );
    await expectNothingChanged();
  });
});

// ---------------------------------------------------------------- SDP bodies

type Mutation = (lines: string[]) => string[];

/** Line-level damage to a real offer. */
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map((i): Mutation => (ls) => ls.filter((_, j) => j !== i % ls.length)),
  fc.nat().map((i): Mutation => (ls) => ls.flatMap((l, j) => (j === i % ls.length ? [l, l] : [l]))),
  fc.tuple(fc.nat(), fc.nat(), fc.string({ unit: "binary", maxLength: 20 })).map(([i, at, junk]): Mutation => (ls) =>
    ls.map((l, j) => (j === i % ls.length ? l.slice(0, at % (l.length + 1)) + junk + l.slice((at % (l.length + 1)) + junk.length) : l)),
  ),
  fc.tuple(fc.nat(), fc.nat()).map(([i, k]): Mutation => (ls) => {
    const out = [...ls];
    const a = i % out.length;
    const b = k % out.length;
    [out[a], out[b]] = [out[b]!, out[a]!];
    return out;
  }),
  fc.tuple(fc.nat(), fc.string({ unit: "binary", maxLength: 60 })).map(([i, line]): Mutation => (ls) => [...ls.slice(0, i % ls.length), line, ...ls.slice(i % ls.length)]),
  fc.nat().map((i): Mutation => (ls) => ls.slice(0, i % ls.length)),
  fc.constantFrom<Mutation>(
    (ls) => ls.map((l) => l.replaceAll("H264", "VP8")),
    (ls) => ls.map((l) => l.replaceAll("packetization-mode=1", "packetization-mode=0")),
    (ls) => ls.map((l) => l.replace(/^a=(recvonly|sendonly)$/, (_m, d: string) => (d === "recvonly" ? "a=sendonly" : "a=recvonly"))),
    (ls) => ls.map((l) => l.replace(/^m=video/, "m=audio")),
    (ls) => ls.filter((l) => !l.startsWith("a=fingerprint")),
    (ls) => ls.filter((l) => !l.startsWith("a=ice-")),
    (ls) => ls.filter((l) => !l.startsWith("m=")),
    (ls) => ls.map((l) => l.replace(/^v=0$/, "v=1")),
  ),
);

/** A real werift offer, damaged: mutated lines, random bytes, or huge. */
const damagedOffer = (offer: string): fc.Arbitrary<string | Uint8Array> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.tuple(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.constantFrom("\r\n", "\n")).map(([ms, eol]) => ms.reduce((ls, m) => m(ls), offer.split("\r\n").filter((l) => l !== "")).join(eol) + eol) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 4096 }) },
    { weight: 1, arbitrary: fc.integer({ min: 64 * 1024 + 1, max: 300 * 1024 }).map((n) => offer + "a=x-junk:" + "z".repeat(n)) },
  );

describe(`fuzz (seed ${SEED}): SDP offers`, () => {
  it("a WHIP publish of a held camera that does not name its owner and lease epoch is 400 (malformed headers) or 409, whatever the offer", async () => {
    const epoch = before.leases.cam01!.split("@")[1]!;
    const printable = (v: string) => /^[\x20-\x7e]*$/.test(v);
    const nodeHeader = fc.option(fc.oneof(pathBadId, unknownId, fc.constant(NODE)).filter(printable), { nil: undefined });
    const epochHeader = fc.option(fc.oneof(fc.string({ unit: "binary-ascii", maxLength: 18 }), fc.stringMatching(/^\d{1,15}$/), fc.constantFrom("0", "-1", epoch, `${epoch}.0`, `0${epoch}`, "9".repeat(16))).filter(printable), { nil: undefined });
    await fc.assert(
      fc.asyncProperty(nodeHeader, epochHeader, fc.boolean(), async (nodeId, ep, damaged) => {
        // fetch trims header values: judge what the gateway receives. The owner's own pair would publish (not a bad input).
        fc.pre(nodeId !== undefined || ep !== undefined);
        fc.pre(!(nodeId?.trim() === NODE && ep !== undefined && /^\d{1,15}$/.test(ep.trim()) && Number(ep.trim()) === Number(epoch)));
        const headers: Record<string, string> = { "content-type": "application/sdp" };
        if (nodeId !== undefined) headers[PUBLISHER_NODE_HEADER] = nodeId;
        if (ep !== undefined) headers[PUBLISHER_EPOCH_HEADER] = ep;
        const c: HttpCase = { what: `WHIP as ${JSON.stringify(nodeId)}@${JSON.stringify(ep)}`, method: "POST", path: "/whip/cam01", body: damaged ? "v=0\r\n" : offers.whip, headers };
        const a = await send(c);
        expectHttpError(c, a);
        expect([400, 409], c.what).toContain(a.status);
      }),
      params(RUNS.notFound),
    );
    await expectNothingChanged();
  });

  it("a damaged offer to WHEP, WHIP or the JSON offer route is 400, 406 or 413 (or a session, if the damage left a valid offer), never a 5xx or a hang", async () => {
    const routes = fc.constantFrom("whep", "whip", "offer");
    let sessions = 0;
    let deadOnArrival = 0;
    await fc.assert(
      fc.asyncProperty(
        routes.chain((r) => damagedOffer(r === "whip" ? offers.whip : offers.whep).map((sdp) => ({ r, sdp }))),
        async ({ r, sdp }) => {
          const c: HttpCase =
            r === "offer"
              ? { what: "JSON offer", method: "POST", path: "/cameras/cam01/webrtc/offer", body: json({ sdp: typeof sdp === "string" ? sdp : Buffer.from(sdp).toString("latin1"), type: "offer" }), headers: JSON_TYPE }
              : { what: r, method: "POST", path: r === "whip" ? `/whip/${IDLE}` : "/whep/cam01", body: sdp, headers: { "content-type": "application/sdp" } };
          const a = await send(c);
          if (a.status === 201 || a.status === 200) {
            // The damage left an offer the relay can answer (a dropped candidate, a repeated attribute): a real session, ended at once.
            const location = a.status === 201 ? a.headers.get("location") : (JSON.parse(a.text) as { location: string }).location;
            expect(location, `${c.what}: success without a session`).toBeTruthy();
            const ended = await fetch(location!, { method: "DELETE", signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) });
            // 404: the session had already ended on its own (ICE or DTLS failed at once, e.g. an offer without a=ice-pwd).
            expect([200, 404], `${c.what}: DELETE of the session`).toContain(ended.status);
            if (ended.status === 404) {
              deadOnArrival++;
            }
            sessions++;
            return;
          }
          expectHttpError(c, a);
          expect([400, 406, 413], `${c.what} → ${a.status} ${a.text.slice(0, 200)}`).toContain(a.status);
        },
      ),
      params(RUNS.sdp),
    );
    // Most damage must be caught; a run where every offer passed would mean the mutations do nothing.
    expect(sessions).toBeLessThan((RUNS.sdp * RUNS_FACTOR) / 2);
    // The gateway's log reaches the error-line check: a viewer it accepted was logged.
    if (sessions > 0) expect(gatewayLines.some((l) => l.msg === "WHEP viewer accepted" || l.msg === "WHIP publisher accepted")).toBe(true);
    console.log(`SDP fuzz: ${Math.round(RUNS.sdp * RUNS_FACTOR)} offers, ${sessions} answered (${deadOnArrival} of them ended before the DELETE)`);
    await expectNothingChanged();
  });
});
