// The gateway's live events (GET /events as SSE, GET /ws) and detection
// history (GET /cameras/{id}/detections) against a real nats-server: events
// published with plain JetStream publishes shaped by subjects' schemas, the
// gateway in-process (startGateway, or the route module on its own http
// server where a test needs small bounds).

import { connect as netConnect } from "node:net";
import { Writable } from "node:stream";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { WebSocket } from "ws";
import type { Gateway } from "../gateway/index.ts";
import { createHttp } from "../gateway/http.ts";
import { eventRoutes } from "../gateway/routes/events.ts";
import type { FeedTuning } from "../gateway/event-hub.ts";
import { createLogger, ensureJetStream, silentLogger } from "../runtime/index.ts";
import { STREAMS, subjects, type DetectionEvent, type StatusEvent } from "../subjects/index.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { detectionEvent, statusEvent, type EventSource } from "./helpers/detections.ts";
import { waitFor } from "./helpers/wait.ts";

type Where = EventSource;
const detection = detectionEvent;
const status = (w: Where) => statusEvent(w, "periodic");
const C1: Where = { camera: "c1", tenant: "acme", site: "hq" };
const C2: Where = { camera: "c2", tenant: "acme", site: "lab" };
const C3: Where = { camera: "c3", tenant: "other", site: "hq" };



interface Published {
  type: "status" | "detection";
  seq: number;
  camera: string;
}

async function cluster() {
  const nats = await startNats({ onCleanup: onTestFinished });
  const nc: NatsConnection = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  await ensureJetStream(nc);
  const js: JetStreamClient = jetstream(nc);
  const published: Published[] = [];
  const publish = async (e: DetectionEvent | StatusEvent): Promise<Published> => {
    const subject = e.type === "detection" ? subjects.detections(e.camera, e.tenant, e.site) : subjects.status(e.camera, e.tenant, e.site);
    const ack = await js.publish(subject, JSON.stringify(e), e.type === "detection" ? { msgID: e.id } : {});
    const p = { type: e.type, seq: ack.seq, camera: e.camera };
    published.push(p);
    return p;
  };
  const gateway = (env: Record<string, string> = {}, logger = silentLogger()): Promise<Gateway> => startTestGateway({ natsUrl: nats.url, env, logger, onCleanup: onTestFinished });
  /** Only the event routes, with small bounds. */
  const eventsOnly = async (tuning: FeedTuning, logger = silentLogger()) => {
    const app = createHttp({ logger });
    const feeds = eventRoutes(app, { nc, logger, tuning });
    onTestFinished(() => app.close());
    await app.listen({ port: 0, host: "127.0.0.1" });
    const addr = app.server.address() as { port: number };
    return { url: `http://127.0.0.1:${addr.port}`, feeds, port: addr.port };
  };
  const consumers = async (stream: string) => (await (await jetstreamManager(nc)).streams.info(stream)).state.consumer_count;
  return { nats, nc, js, publish, published, gateway, eventsOnly, consumers };
}

interface SseEvent {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/** A Server-Sent Events client over fetch: every record, the last id, and comments. */
async function openSse(url: string, headers: Record<string, string> = {}) {
  const ctl = new AbortController();
  onTestFinished(() => ctl.abort());
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: ctl.signal });
  const events: SseEvent[] = [];
  const comments: string[] = [];
  let lastId: string | undefined;
  let ended = false;
  const reading = (async () => {
    if (res.body === null || res.status !== 200) return;
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let cut: number;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const rec: SseEvent = { id: undefined, event: undefined, data: "" };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) comments.push(line);
            else if (line.startsWith("id: ")) rec.id = lastId = line.slice(4);
            else if (line.startsWith("event: ")) rec.event = line.slice(7);
            else if (line.startsWith("data: ")) rec.data += line.slice(6);
          }
          if (rec.data !== "") events.push(rec);
        }
      }
    } catch {
      // aborted
    }
    ended = true;
  })();
  return {
    res,
    events,
    comments,
    get lastId() {
      return lastId;
    },
    get ended() {
      return ended;
    },
    /** Data events (status and detection), parsed. */
    items: () => events.filter((e) => e.event === "status" || e.event === "detection").map((e) => ({ id: e.id!, type: e.event as "status" | "detection", event: JSON.parse(e.data) as DetectionEvent | StatusEvent })),
    close: async () => {
      ctl.abort();
      await reading;
    },
  };
}

/** Stream sequences of an id `s<a>-d<b>`. */
function seqs(id: string): { s: number; d: number } {
  const m = /^s(\d+)-d(\d+)$/.exec(id);
  if (!m) throw new Error(`not an event id: ${id}`);
  return { s: Number(m[1]), d: Number(m[2]) };
}

/** The stream sequence each received event stands for: its part of the id grew to it. */
function seqOf(item: { id: string; type: string }): number {
  const { s, d } = seqs(item.id);
  return item.type === "status" ? s : d;
}

describe("GET /events (SSE)", () => {
  it("delivers new events in stream order with ids, from one consumer per stream for many clients", async () => {
    const { gateway, publish, published, consumers } = await cluster();
    await publish(detection(C1)); // before anyone listens: not delivered to a new client
    const gw = await gateway();
    const clients = await Promise.all([0, 1, 2].map(() => openSse(`${gw.url}/events`)));
    for (const c of clients) {
      expect(c.res.status).toBe(200);
      expect(c.res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    }
    await waitFor(() => clients.every((c) => c.lastId !== undefined), { message: "each client got its start id" });
    expect(seqs(clients[0]!.lastId!).d).toBe(1);
    const before = published.length;
    for (let i = 0; i < 20; i++) await publish(i % 3 === 0 ? status(C2) : detection(i % 2 === 0 ? C1 : C3));
    const want = published.slice(before);
    await waitFor(() => clients.every((c) => c.items().length >= want.length), { message: "every client got all 20" });
    for (const c of clients) {
      const got = c.items();
      // Each stream in its own order, all of it once. The two streams are two
      // feeds merged as they arrive: their interleaving is nobody's promise
      // (a full-suite run saw a detection overtake the status published before it).
      for (const type of ["status", "detection"] as const) {
        const of = (xs: Array<{ type: string; seq: number }>) => xs.filter((x) => x.type === type).map((x) => x.seq);
        expect(of(got.map((g) => ({ type: g.type, seq: seqOf(g) })))).toEqual(of(want));
      }
      expect(got).toHaveLength(want.length);
      expect(got.find((g) => g.type === "detection")?.event).toMatchObject({ type: "detection", camera: expect.any(String) });
    }
    // Three clients, one filter: one consumer on each stream.
    expect(await consumers(STREAMS.status)).toBe(1);
    expect(await consumers(STREAMS.detections)).toBe(1);
    await Promise.all(clients.map((c) => c.close()));
    await waitFor(async () => (await consumers(STREAMS.status)) + (await consumers(STREAMS.detections)) === 0, { message: "consumers gone with the last client" });
  });

  for (const keepHub of [false, true]) {
    it(`resumes with Last-Event-ID after the connection is killed mid-stream: no gap, no repeat (${keepHub ? "another client keeps the feed" : "alone"})`, async () => {
      const { gateway, publish, published, consumers } = await cluster();
      const gw = await gateway();
      const observer = keepHub ? await openSse(`${gw.url}/events`) : undefined;
      const first = await openSse(`${gw.url}/events`);
      await waitFor(() => first.lastId !== undefined && (observer === undefined || observer.lastId !== undefined), { message: "connected" });
      const base = published.length;
      let publishing = true;
      const publisher = (async () => {
        for (let i = 0; publishing || i < 60; i++) await publish(i % 4 === 0 ? status(C1) : detection(i % 2 === 0 ? C1 : C2));
      })();
      await waitFor(() => first.items().length >= 15, { message: "some events before the kill" });
      await first.close(); // killed mid-stream; the publisher goes on
      const lastId = first.lastId!;
      const seen = first.items();
      await waitFor(() => published.length >= base + 30 + seen.length, { message: "events published while disconnected" });
      const second = await openSse(`${gw.url}/events`, { "last-event-id": lastId });
      expect(second.res.status).toBe(200);
      publishing = false;
      await publisher;
      const want = published.slice(base);
      await waitFor(() => seen.length + second.items().length >= want.length, { timeoutMs: 10_000, message: "the rest after the resume" });
      const all = [...seen, ...second.items()].map((g) => `${g.type}:${seqOf(g)}`);
      expect(new Set(all).size).toBe(all.length); // nothing repeated
      expect(all.sort()).toEqual(want.map((p) => `${p.type}:${p.seq}`).sort()); // nothing lost
      // And nothing more arrives.
      await publish(status(C3));
      await waitFor(() => second.items().length === want.length - seen.length + 1, { message: "the next live event" });
      expect(second.items().at(-1)!.event).toMatchObject({ camera: "c3" });
      // The gap was read with a consumer of its own, gone now: one consumer per stream is left, shared.
      await waitFor(async () => (await consumers(STREAMS.status)) === 1 && (await consumers(STREAMS.detections)) === 1, { message: "one consumer per stream" });
      await second.close();
      await observer?.close();
    });
  }

  it("filters by camera, tenant, site and type; since=all replays, since=<time> starts there", async () => {
    const { gateway, publish } = await cluster();
    for (const w of [C1, C2, C3]) {
      await publish(detection(w));
      await publish(status(w));
    }
    const t = Date.now();
    await waitFor(() => Date.now() > t + 5, { message: "clock moved on" });
    const split = new Date().toISOString();
    await waitFor(() => Date.now() > Date.parse(split) + 5, { message: "clock moved on" });
    await publish(detection(C1));
    const gw = await gateway();
    const cases: Array<[string, string[]]> = [
      ["since=all", ["detection:c1", "status:c1", "detection:c2", "status:c2", "detection:c3", "status:c3", "detection:c1"]],
      ["since=all&camera=c1", ["detection:c1", "status:c1", "detection:c1"]],
      ["since=all&tenant=acme&type=detection", ["detection:c1", "detection:c2", "detection:c1"]],
      ["since=all&site=hq&type=status", ["status:c1", "status:c3"]],
      ["since=all&tenant=acme&site=lab", ["detection:c2", "status:c2"]],
      [`since=${encodeURIComponent(split)}`, ["detection:c1"]],
      ["since=1h&camera=c3", ["detection:c3", "status:c3"]],
    ];
    for (const [query, want] of cases) {
      const c = await openSse(`${gw.url}/events?${query}`);
      await waitFor(() => c.items().length >= want.length, { message: query });
      const got = c.items().map((g) => `${g.type}:${g.event.camera}`);
      // Two streams are merged as events come: compare each stream's order.
      for (const type of ["status", "detection"]) {
        expect(got.filter((g) => g.startsWith(type)), `${query} ${type}`).toEqual(want.filter((g) => g.startsWith(type)));
      }
      await c.close();
    }
    // EventSource reconnects to the same URL with Last-Event-ID: the id wins over since.
    const all = await openSse(`${gw.url}/events?since=all`);
    await waitFor(() => all.items().length >= 7, { message: "all 7" });
    const again = await openSse(`${gw.url}/events?since=all`, { "last-event-id": all.items()[2]!.id });
    await waitFor(() => again.items().length >= 4, { message: "the 4 after the 3rd" });
    const key = (g: { type: string; id: string }) => `${g.type}:${seqOf(g)}`;
    expect(again.items().map(key).sort()).toEqual(all.items().slice(3).map(key).sort());
    await all.close();
    await again.close();
  });

  it("goes on without a gap or a repeat across a restart of the nats-server", async () => {
    const { nats, gateway, publish, published } = await cluster();
    const gw = await gateway();
    const sse = await openSse(`${gw.url}/events`);
    await waitFor(() => sse.lastId !== undefined, { message: "connected" });
    for (let i = 0; i < 6; i++) await publish(i % 2 === 0 ? status(C1) : detection(C1));
    await waitFor(() => sse.items().length === 6, { message: "6 before the restart" });
    await nats.server.restart();
    // Publishes fail until the test's own connection is back; retried with the same Nats-Msg-Id, each is stored once.
    for (let i = 0; i < 6; i++) {
      const e = detection(C2);
      await waitFor(() => publish(e), { timeoutMs: 15_000, message: "a publish after the restart" });
    }
    await waitFor(() => sse.items().length >= 12, { timeoutMs: 20_000, message: "6 more after the restart" });
    const key = (g: { type: string; id: string }) => `${g.type}:${seqOf(g)}`;
    expect(sse.items().map(key).sort()).toEqual(published.map((p) => `${p.type}:${p.seq}`).sort());
    await sse.close();
  });

  it("rejects bad filters and ids with 400 INVALID_ARGUMENT before the stream opens", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();
    const bad: Array<[string, Record<string, string>?]> = [
      ["camera=a.b"],
      ["tenant=*"],
      ["site=%3E"],
      ["camera="],
      ["type=alerts"],
      ["since=yesterday"],
      ["bogus=1"],
      ["last_event_id=42"],
      ["", { "last-event-id": "s1-x2" }],
    ];
    for (const [query, headers] of bad) {
      const res = await fetch(`${gw.url}/events?${query}`, { headers: headers ?? {} });
      expect(res.status, query).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code, query).toBe("INVALID_ARGUMENT");
    }
  });

  it("sends heartbeat comments and drops a client that stops reading, with a reason, memory bounded", async () => {
    const { eventsOnly, publish } = await cluster();
    const lines: string[] = [];
    const logger = createLogger({ node: "gw", level: "warn", destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) });
    const bound = 128 * 1024;
    const gw = await eventsOnly({ heartbeatMs: 100, maxBufferedBytes: bound }, logger);
    const idle = await openSse(`${gw.url}/events`);
    await waitFor(() => idle.comments.includes(": heartbeat"), { message: "a heartbeat comment" });
    await idle.close();
    await waitFor(() => gw.feeds.clientCount === 0, { message: "the idle client is gone" });

    // A raw socket that sends the request and then reads nothing.
    const sock = netConnect(gw.port, "127.0.0.1");
    onTestFinished(() => void sock.destroy());
    let closed = false;
    sock.on("close", () => (closed = true));
    sock.on("error", () => undefined);
    await new Promise<void>((r) => sock.once("connect", () => r()));
    sock.write("GET /events?type=detection HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    sock.pause();
    await waitFor(() => gw.feeds.clientCount === 1, { message: "the client is connected" });
    // ~8 KB events until the kernel's buffers are full and the gateway's passes the bound.
    const big = Array.from({ length: 2000 }, () => detection(C1, 100));
    for (let i = 0; i < big.length && gw.feeds.clientCount > 0; i += 50) await Promise.all(big.slice(i, i + 50).map((e) => publish(e)));
    await waitFor(() => gw.feeds.clientCount === 0, { timeoutMs: 10_000, message: "the slow client was dropped" });
    // Counted for camfleet_gateway_event_clients_ended_total; the idle client that left by itself is not.
    expect(gw.feeds.ended).toEqual({ slow_client: 1, shutdown: 0, feed_failed: 0 });
    const drop = lines.map((l) => JSON.parse(l) as { msg: string; detail?: string; buffered?: number }).find((l) => l.msg === "dropped a slow event client");
    expect(drop?.detail, lines.join("")).toMatch(/bytes not taken/);
    // Dropped at the first event past the bound: what the gateway held stayed within it and one event.
    expect(drop!.buffered).toBeGreaterThan(bound);
    expect(drop!.buffered).toBeLessThan(bound + 16 * 1024);
    // The socket goes away (reading again finds its end), and nothing keeps the feed alive.
    sock.resume();
    await waitFor(() => closed, { timeoutMs: 10_000, message: "the dropped socket closed" });
    await waitFor(() => gw.feeds.hubCount === 0, { message: "no feed left" });
  });
});

describe("gateway stop", () => {
  it("ends SSE streams and WebSockets telling why", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();
    const sse = await openSse(`${gw.url}/events`);
    const ws = new WebSocket(`${gw.url.replace(/^http/, "ws")}/ws`);
    onTestFinished(() => ws.terminate());
    let closed: { code: number; reason: string } | undefined;
    ws.on("close", (code, reason) => (closed = { code, reason: String(reason) }));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    await waitFor(() => sse.lastId !== undefined, { message: "connected" });
    await gw.stop();
    await waitFor(() => sse.ended && closed !== undefined, { message: "both ended" });
    const end = sse.events.find((e) => e.event === "end");
    expect(JSON.parse(end!.data)).toMatchObject({ reason: "shutdown" });
    expect(closed).toMatchObject({ code: 1001, reason: expect.stringMatching(/^shutdown: /) });
  });
});

describe("GET /ws (WebSocket)", () => {
  /** A WebSocket client collecting frames. */
  async function openWs(url: string) {
    const ws = new WebSocket(url);
    onTestFinished(() => ws.terminate());
    const frames: Array<{ type: string; id: string; event?: DetectionEvent | StatusEvent }> = [];
    let close: { code: number; reason: string } | undefined;
    ws.on("message", (data) => frames.push(JSON.parse(String(data))));
    ws.on("close", (code, reason) => (close = { code, reason: String(reason) }));
    const opened = await new Promise<{ ok: true } | { ok: false; status: number | undefined }>((resolve) => {
      ws.once("open", () => resolve({ ok: true }));
      ws.once("unexpected-response", (_req, res) => resolve({ ok: false, status: res.statusCode }));
      ws.once("error", () => resolve({ ok: false, status: undefined }));
    });
    return { ws, frames, opened, get close() {
      return close;
    }, items: () => frames.filter((f) => f.type !== "ready") };
  }

  it("gets the same events as SSE, with the same filters and resume", async () => {
    const { gateway, publish } = await cluster();
    const gw = await gateway();
    const wsUrl = gw.url.replace(/^http/, "ws");
    const sse = await openSse(`${gw.url}/events?tenant=acme`);
    const ws = await openWs(`${wsUrl}/ws?tenant=acme`);
    expect(ws.opened).toEqual({ ok: true });
    await waitFor(() => ws.frames[0]?.type === "ready" && sse.lastId !== undefined, { message: "both ready" });
    for (let i = 0; i < 12; i++) await publish(i % 3 === 0 ? status(C1) : detection(i % 2 === 0 ? C2 : C3));
    // c3 is tenant "other": 8 of the 12.
    await waitFor(() => ws.items().length >= 8 && sse.items().length >= 8, { message: "8 events on both" });
    expect(ws.items().map((f) => ({ id: f.id, type: f.type, event: f.event }))).toEqual(sse.items());
    // Resume over the socket from the 4th event: the rest again, exactly.
    const resumed = await openWs(`${wsUrl}/ws?tenant=acme&last_event_id=${ws.items()[3]!.id}`);
    await waitFor(() => resumed.items().length >= 4, { message: "the rest after the 4th" });
    // The two streams' gaps are read side by side, so only each stream's order is given (and ids follow the interleaving).
    const byStream = (fs: Array<{ id: string; type: string; event?: unknown }>) =>
      fs.map((f) => ({ type: f.type, seq: seqOf(f), event: f.event })).sort((x, y) => x.type.localeCompare(y.type) || x.seq - y.seq);
    expect(byStream(resumed.items())).toEqual(byStream(ws.items().slice(4)));
    await sse.close();
  });

  it("refuses bad filters with an HTTP 400 before the upgrade", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();
    const wsUrl = gw.url.replace(/^http/, "ws");
    for (const q of ["camera=a.b", "type=x", "last_event_id=nope", "extra=1"]) {
      expect((await openWs(`${wsUrl}/ws?${q}`)).opened, q).toEqual({ ok: false, status: 400 });
    }
    const plain = await fetch(`${gw.url}/ws`);
    expect(plain.status).toBe(400);
  });

  it("closes a client that stops reading with code 1008 and a reason", async () => {
    const { eventsOnly, publish } = await cluster();
    const gw = await eventsOnly({ maxBufferedBytes: 128 * 1024 });
    const ws = await openWs(`${gw.url.replace(/^http/, "ws")}/ws?type=detection`);
    expect(ws.opened).toEqual({ ok: true });
    await waitFor(() => gw.feeds.clientCount === 1, { message: "connected" });
    (ws.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const big = Array.from({ length: 2000 }, () => detection(C1, 100));
    for (let i = 0; i < big.length && gw.feeds.clientCount > 0; i += 50) await Promise.all(big.slice(i, i + 50).map((e) => publish(e)));
    await waitFor(() => gw.feeds.clientCount === 0, { timeoutMs: 10_000, message: "dropped" });
    (ws.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    await waitFor(() => ws.close, { timeoutMs: 10_000, message: "the socket closed" });
    // The close frame may be lost behind the unread data when the gateway gives up waiting; if it arrived it says why.
    if (ws.close!.code === 1008) expect(ws.close!.reason).toMatch(/^slow_client: /);
    else expect(ws.close!.code).toBe(1006);
  });
});

describe("bearer token", () => {
  it("accepts ?token= on /events and /ws only, and never logs it", async () => {
    const { gateway } = await cluster();
    const lines: string[] = [];
    const logger = createLogger({ node: "gw", level: "debug", destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) });
    const token = "s3cr3t-events-token";
    const gw = await gateway({ CAMFLEET_API_TOKEN: token }, logger);
    expect((await fetch(`${gw.url}/events`)).status).toBe(401);
    expect((await fetch(`${gw.url}/events?token=wrong`)).status).toBe(401);
    const sse = await openSse(`${gw.url}/events?token=${token}`);
    expect(sse.res.status).toBe(200);
    const hdr = await openSse(`${gw.url}/events`, { authorization: `Bearer ${token}` });
    expect(hdr.res.status).toBe(200);
    const ws = new WebSocket(`${gw.url.replace(/^http/, "ws")}/ws?token=${token}`);
    onTestFinished(() => ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    expect((await fetch(`${gw.url}/cameras/c1/detections?token=${token}`)).status).toBe(401);
    await sse.close();
    await hdr.close();
    expect(lines.join("")).not.toContain(token);
  });
});

describe("event metrics", () => {
  it("/metrics counts connected event clients and the consumers behind them, and the clients the gateway ended", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();
    /** The value of the series `name` whose labels include `label` (the registry adds its own, e.g. node). */
    const metric = async (name: string, label = "") => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      const line = text.split("\n").find((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(label));
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
    };
    expect(await metric("camfleet_gateway_event_clients")).toBe(0);
    expect(await metric("camfleet_gateway_event_clients_ended_total", 'reason="slow_client"')).toBe(0);
    const a = await openSse(`${gw.url}/events?camera=c1`);
    const b = await openSse(`${gw.url}/events?camera=c1`);
    const c = await openSse(`${gw.url}/events?type=status`);
    await waitFor(async () => (await metric("camfleet_gateway_event_clients")) === 3, { message: "three clients counted" });
    // Two filters over two streams: c1 reads both streams, the status-only client one.
    expect(await metric("camfleet_gateway_event_consumers")).toBe(3);
    await a.close();
    await b.close();
    await c.close();
    await waitFor(async () => (await metric("camfleet_gateway_event_clients")) === 0 && (await metric("camfleet_gateway_event_consumers")) === 0, { message: "clients and consumers gone" });
  });
});

describe("GET /cameras/{id}/detections", () => {
  it("pages newest or oldest first with a cursor, within since and until", async () => {
    const { gateway, publish } = await cluster();
    const a: Published[] = [];
    const b: Published[] = [];
    for (let i = 0; i < 13; i++) {
      a.push(await publish(detection(C1)));
      await publish(detection(C2)); // another camera in between
    }
    const t = Date.now();
    await waitFor(() => Date.now() > t + 5, { message: "clock moved on" });
    const split = Date.now();
    await waitFor(() => Date.now() > split + 5, { message: "clock moved on" });
    for (let i = 0; i < 12; i++) {
      b.push(await publish(detection(C1)));
      if (i % 3 === 0) await publish(status(C1));
    }
    const gw = await gateway();
    const all = [...a, ...b].map((p) => p.seq);

    type Page = { camera: string; order: string; detections: DetectionEvent[]; next: string | null };
    const pages = async (query: string): Promise<{ ids: string[]; sizes: number[] }> => {
      const ids: string[] = [];
      const sizes: number[] = [];
      let next: string | null = null;
      do {
        const res = await fetch(`${gw.url}/cameras/c1/detections?${query}${next !== null ? `&cursor=${next}` : ""}`);
        expect(res.status).toBe(200);
        expect(res.headers.get("cache-control")).toBe("no-store");
        const page = (await res.json()) as Page;
        expect(page.camera).toBe("c1");
        ids.push(...page.detections.map((d) => d.id));
        sizes.push(page.detections.length);
        next = page.next;
      } while (next !== null && sizes.length < 20);
      return { ids, sizes };
    };
    const byId = async () => {
      const res = await fetch(`${gw.url}/cameras/c1/detections?order=oldest&limit=1000`);
      return ((await res.json()) as Page).detections.map((d) => d.id);
    };
    const oldest = await byId();
    expect(oldest).toHaveLength(all.length);

    const newest = await pages("limit=10");
    expect(newest.sizes).toEqual([10, 10, 5]);
    expect(newest.ids).toEqual([...oldest].reverse());
    const up = await pages("limit=10&order=oldest");
    expect(up.sizes).toEqual([10, 10, 5]);
    expect(up.ids).toEqual(oldest);
    // Exactly a page's worth: no empty page after it.
    expect((await pages("limit=25")).sizes).toEqual([25]);
    // Default limit 100, newest first.
    expect((await pages("")).ids).toEqual([...oldest].reverse());

    const since = await pages(`since=${split}&limit=5&order=oldest`);
    expect(since.ids).toEqual(oldest.slice(13));
    const until = await pages(`until=${new Date(split).toISOString()}&limit=4`);
    expect(until.ids).toEqual(oldest.slice(0, 13).reverse());
    expect((await pages(`since=${split}&until=${split + 60_000}`)).ids).toEqual(oldest.slice(13).reverse());
    expect((await pages("since=1h&limit=1000")).ids).toHaveLength(25);
    // Nothing of an unknown camera.
    const none = (await (await fetch(`${gw.url}/cameras/nobody/detections`)).json()) as Page;
    expect(none).toEqual({ camera: "nobody", order: "newest", detections: [], next: null });
  });

  it("rejects bad parameters with 400", async () => {
    const { gateway } = await cluster();
    const gw = await gateway();
    for (const q of ["limit=0", "limit=1001", "limit=ten", "order=up", "since=soon", "until=x", "cursor=abc", "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "label=person"]) {
      const res = await fetch(`${gw.url}/cameras/c1/detections?${q}`);
      expect(res.status, q).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code, q).toBe("INVALID_ARGUMENT");
    }
    expect((await fetch(`${gw.url}/cameras/a.b/detections`)).status).toBe(400);
  });
});
