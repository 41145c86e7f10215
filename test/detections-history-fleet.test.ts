// GET /detections: detection history across cameras, narrowed by camera,
// tenant, site and label, paged both ways with a cursor; a label scan has a
// bounded cost per page and still pages through everything. Real nats-server,
// events published to JetStream as nodes publish them.

import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { createHttp } from "../gateway/http.ts";
import { eventRoutes } from "../gateway/routes/events.ts";
import { ensureJetStream, silentLogger } from "../runtime/index.ts";
import { subjects, type DetectionEvent } from "../subjects/index.ts";
import { detectionEvent, type EventSource } from "./helpers/detections.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";

const C1: EventSource = { camera: "c1", tenant: "acme", site: "hq" };
const C2: EventSource = { camera: "c2", tenant: "acme", site: "lab" };
const C3: EventSource = { camera: "c3", tenant: "other", site: "hq" };

type Page = { order: string; detections: DetectionEvent[]; next: string | null; camera?: string };

async function setUp() {
  const nats = await startNats({ onCleanup: onTestFinished });
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  await ensureJetStream(nc);
  const js = jetstream(nc);
  const published: DetectionEvent[] = [];
  // 30 events over three cameras; every fifth of them found a person next to the motion.
  for (let i = 0; i < 30; i++) {
    const e = detectionEvent([C1, C2, C3][i % 3]!);
    if (i % 5 === 0) e.detections.push({ label: "person", score: 0.9, box: { x: 0.3, y: 0.3, w: 0.1, h: 0.3 } });
    await js.publish(subjects.detections(e.camera, e.tenant, e.site), JSON.stringify(e), { msgID: e.id });
    published.push(e);
  }
  return { nats, nc, published };
}

/** Every page of a query, following `next`; ids in page order. */
async function walk(base: string, query: string): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let next: string | null = null;
  let pages = 0;
  do {
    const res = await fetch(`${base}/detections?${query}${next !== null ? `&cursor=${next}` : ""}`);
    expect(res.status, query).toBe(200);
    const page = (await res.json()) as Page;
    ids.push(...page.detections.map((d) => d.id));
    next = page.next;
    pages++;
  } while (next !== null && pages < 100);
  return { ids, pages };
}

describe("GET /detections", () => {
  it("lists every camera's detections, or one camera's, tenant's or site's, newest or oldest first", async () => {
    const { nats, published } = await setUp();
    const gw = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });
    const ids = published.map((e) => e.id);
    const of = (pred: (e: DetectionEvent) => boolean) => published.filter(pred).map((e) => e.id);

    expect((await walk(gw.url, "limit=7")).ids).toEqual([...ids].reverse());
    expect((await walk(gw.url, "limit=7&order=oldest")).ids).toEqual(ids);
    expect((await walk(gw.url, "tenant=acme&order=oldest")).ids).toEqual(of((e) => e.tenant === "acme"));
    expect((await walk(gw.url, "site=hq&order=oldest")).ids).toEqual(of((e) => e.site === "hq"));
    expect((await walk(gw.url, "tenant=acme&site=lab&order=oldest")).ids).toEqual(of((e) => e.camera === "c2"));

    // One camera: the same events as its own route.
    const own = (await (await fetch(`${gw.url}/cameras/c2/detections?limit=1000`)).json()) as Page;
    expect((await walk(gw.url, "camera=c2&limit=3")).ids).toEqual(own.detections.map((d) => d.id));
    const first = (await (await fetch(`${gw.url}/detections?limit=1`)).json()) as Page;
    expect(first).toMatchObject({ order: "newest", next: expect.any(String) });
    expect(first).not.toHaveProperty("camera");
  });

  it("label keeps the events that found that label, paged with nothing skipped or repeated", async () => {
    const { nats, published } = await setUp();
    const gw = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });
    const people = published.filter((e) => e.detections.some((d) => d.label === "person")).map((e) => e.id);
    expect(people).toHaveLength(6);
    expect((await walk(gw.url, "label=person&limit=4&order=oldest")).ids).toEqual(people);
    expect((await walk(gw.url, "label=person&limit=4")).ids).toEqual([...people].reverse());
    expect((await walk(gw.url, "label=person&site=hq&order=oldest")).ids).toEqual(published.filter((e) => e.site === "hq" && people.includes(e.id)).map((e) => e.id));
    expect((await walk(gw.url, "label=car")).ids).toEqual([]);
  });

  it("a label scan reads a bounded number of messages per page, and the cursor goes on from where it stopped", async () => {
    const { nc, published } = await setUp();
    const app = createHttp({ logger: silentLogger() });
    eventRoutes(app, { nc, logger: silentLogger(), historyScanBudget: 4 });
    onTestFinished(() => app.close());
    await app.listen({ port: 0, host: "127.0.0.1" });
    const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const people = published.filter((e) => e.detections.some((d) => d.label === "person")).map((e) => e.id);

    for (const order of ["oldest", "newest"] as const) {
      const { ids, pages } = await walk(base, `label=person&limit=100&order=${order}`);
      expect(ids).toEqual(order === "oldest" ? people : [...people].reverse());
      // 30 messages, 4 a page: at least 8 pages although one page could hold all six matches.
      expect(pages).toBeGreaterThanOrEqual(8);
    }
  });

  it("rejects bad parameters with 400 and a code", async () => {
    const { nats } = await setUp();
    const gw = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });
    for (const q of ["camera=a.b", "tenant=x>y", "site=", "label=", `label=${"x".repeat(65)}`, "limit=0", "order=up", "cursor=x", "colour=red"]) {
      const res = await fetch(`${gw.url}/detections?${q}`);
      expect(res.status, q).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code, q).toBe("INVALID_ARGUMENT");
    }
  });
});
