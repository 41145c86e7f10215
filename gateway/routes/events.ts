import type { OutgoingHttpHeaders } from "node:http";
import websocket from "@fastify/websocket";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { WebSocket } from "ws";
import { z } from "zod";
import { parseSince, toCamfleetError, type EventType, type Logger, type NatsConnection } from "../../runtime/index.ts";
import { assertId, CamfleetError, IdSchema, parseOrThrow, type Scope } from "../../subjects/index.ts";
import { detectionHistory } from "../detection-history.ts";
import { EventFeeds, parseEventId, type EndReason, type EventCursor, type EventSink, type FeedFilter, type FeedStart, type FeedTuning } from "../event-hub.ts";
import { eventJson, EventStore, type StoredEvent } from "../event-store.ts";

/**
 * Event routes:
 *   GET /events                      Server-Sent Events of status and detection events
 *   GET /ws                          the same events over a WebSocket (JSON text frames)
 *   GET /cameras/{id}/detections     a camera's detection history, by time, paged
 *   GET /detections                  the same across cameras, by camera/tenant/site and label
 * Filters `camera`, `tenant`, `site`, `type`; resume with `Last-Event-ID`
 * (or `last_event_id`), or start at `since`. Ids and fan-out: event-hub.ts.
 */

export interface EventRoutesDeps {
  nc: NatsConnection;
  logger: Logger;
  tuning?: FeedTuning;
  /** Messages a label-filtered history page reads at most (tests); default SCAN_BUDGET of detection-history.ts. */
  historyScanBudget?: number;
}

export const FeedQuerySchema = z.strictObject({
  camera: IdSchema.optional(),
  tenant: IdSchema.optional(),
  site: IdSchema.optional(),
  type: z.enum(["status", "detection"]).optional(),
  since: z.string().max(64).optional(),
  last_event_id: z.string().max(64).optional(),
  /** The API token, for clients that cannot set a header (browsers' WebSocket and EventSource); checked by http.ts. */
  token: z.string().optional(),
});

export const HistoryQuerySchema = z.strictObject({
  since: z.string().max(64).optional(),
  until: z.string().max(64).optional(),
  limit: z
    .string()
    .regex(/^\d{1,4}$/, "must be a whole number from 1 to 1000")
    .transform(Number)
    .refine((n) => n >= 1 && n <= MAX_HISTORY_LIMIT, "must be a whole number from 1 to 1000")
    .optional(),
  order: z.enum(["newest", "oldest"]).optional(),
  cursor: z.string().regex(/^\d{1,16}$/, "must be the `next` of a previous page").optional(),
});

export const FleetHistoryQuerySchema = HistoryQuerySchema.extend({
  camera: IdSchema.optional(),
  tenant: IdSchema.optional(),
  site: IdSchema.optional(),
  label: z.string().min(1).max(64).optional(),
});

export const DEFAULT_HISTORY_LIMIT = 100;
export const MAX_HISTORY_LIMIT = 1000;

/** WebSocket close codes of the reasons a feed ends: policy violation, going away, internal error. */
const WS_CLOSE = { slow_client: 1008, shutdown: 1001, feed_failed: 1011 } as const satisfies Record<EndReason["reason"], number>;

interface FeedRequest {
  filter: FeedFilter;
  cursor: EventCursor;
}

/** Validates a feed request's query and headers and resolves where it starts; throws INVALID_ARGUMENT. */
async function feedRequest(feeds: EventFeeds, req: FastifyRequest): Promise<FeedRequest> {
  const q = parseOrThrow(FeedQuerySchema, req.query ?? {}, "query");
  const scope = {
    ...(q.camera !== undefined ? { camera: q.camera } : {}),
    ...(q.tenant !== undefined ? { tenant: q.tenant } : {}),
    ...(q.site !== undefined ? { site: q.site } : {}),
  };
  const types: EventType[] = q.type === undefined ? ["status", "detection"] : [q.type];
  const header = req.headers["last-event-id"];
  const lastId = (Array.isArray(header) ? header[0] : header) ?? q.last_event_id;
  let start: FeedStart = "new";
  if (lastId !== undefined && lastId !== "") start = { after: parseEventId(lastId) };
  else if (q.since === "all") start = { after: { status: 0, detection: 0 } };
  else if (q.since !== undefined) start = { time: parseSince(q.since) };
  const filter = { scope, types };
  const cursor = await feeds.resolve(filter, start).catch((err: unknown) => {
    throw toCamfleetError(err, "JetStream");
  });
  return { filter, cursor };
}

/**
 * The SSE record of an event, as bytes. Clients level with each other (the
 * usual case: live clients of one filter) give it the same id, so the last
 * record made is kept for the next client: one copy for all of them instead
 * of one string and one UTF-8 encoding per client.
 */
const lastRecord = new WeakMap<StoredEvent, { id: string; bytes: Buffer }>();
function sseRecord(id: string, e: StoredEvent): Buffer {
  const kept = lastRecord.get(e);
  if (kept?.id === id) return kept.bytes;
  const bytes = Buffer.from(`id: ${id}\nevent: ${e.type}\ndata: ${eventJson(e)}\n\n`);
  lastRecord.set(e, { id, bytes });
  return bytes;
}

/** The SSE response as a sink. The request was hijacked: fastify no longer touches the response. */
function sseSink(reply: FastifyReply, firstId: string): EventSink {
  const raw = reply.raw;
  const closers: Array<() => void> = [];
  let closed = false;
  raw.on("close", () => {
    closed = true;
    for (const fn of closers.splice(0)) fn();
  });
  // Headers fastify's hooks set (CORS) go out too: after hijack() fastify writes none.
  raw.writeHead(200, {
    ...(reply.getHeaders() as OutgoingHttpHeaders),
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    "x-accel-buffering": "no",
  });
  const socket = raw.socket;
  socket?.setNoDelay(true);
  // An id with no data sets the client's last event id without an event: a reconnect resumes from here.
  raw.write(`retry: 1000\nid: ${firstId}\n\n`);
  return {
    send: (id, e) => void raw.write(sseRecord(id, e)),
    bufferedBytes: () => raw.writableLength,
    drained: () =>
      new Promise<void>((resolve) => {
        if (closed || raw.writableLength === 0) return resolve();
        const done = () => {
          raw.off("drain", done);
          raw.off("close", done);
          resolve();
        };
        raw.on("drain", done);
        raw.on("close", done);
      }),
    heartbeat: () => void raw.write(": heartbeat\n\n"),
    end: (why) => {
      if (closed) return;
      // The connection goes too (not kept alive for another request): the client sees the end at once.
      const timer = setTimeout(() => socket?.destroy(), 1000);
      timer.unref();
      raw.end(`event: end\ndata: ${JSON.stringify(why)}\n\n`, () => {
        clearTimeout(timer);
        socket?.end();
      });
      // A client that reads nothing would keep the response (and what it holds) forever: the timer destroys it.
    },
    get closed() {
      return closed;
    },
    onClose: (fn) => (closed ? fn() : void closers.push(fn)),
  };
}

/** A WebSocket as a sink: one JSON text frame per event, `{id, type, event}`. */
function wsSink(socket: WebSocket): EventSink {
  const closers: Array<() => void> = [];
  let closed = false;
  let unsent = 0;
  let waiters: Array<() => void> = [];
  const settle = () => {
    if (unsent === 0 || closed) for (const w of waiters.splice(0)) w();
  };
  socket.on("close", () => {
    closed = true;
    settle();
    for (const fn of closers.splice(0)) fn();
  });
  // Frames from the client are not part of the contract; a ping is answered by ws itself.
  socket.on("message", () => undefined);
  const written = () => {
    unsent--;
    settle();
  };
  const frame = (data: string) => {
    unsent++;
    socket.send(data, written);
  };
  return {
    send: (id, e) => frame(`{"id":${JSON.stringify(id)},"type":${JSON.stringify(e.type)},"event":${eventJson(e)}}`),
    bufferedBytes: () => socket.bufferedAmount,
    drained: () => new Promise<void>((resolve) => (unsent === 0 || closed ? resolve() : void waiters.push(resolve))),
    heartbeat: () => socket.ping(),
    end: (why) => {
      if (closed) return;
      // A close reason is at most 123 bytes.
      socket.close(WS_CLOSE[why.reason], Buffer.from(`${why.reason}: ${why.message}`).subarray(0, 123).toString());
      setTimeout(() => socket.terminate(), 1000).unref();
    },
    get closed() {
      return closed;
    },
    onClose: (fn) => (closed ? fn() : void closers.push(fn)),
  };
}

export function eventRoutes(app: FastifyInstance, deps: EventRoutesDeps): EventFeeds {
  const store = new EventStore(deps.nc);
  const log = deps.logger.child({ component: "events" });
  const feeds = new EventFeeds(store, log, deps.tuning);
  app.addHook("preClose", async () => feeds.stop());

  app.get("/events", async (req, reply) => {
    const { filter, cursor } = await feedRequest(feeds, req);
    if (feeds.stopping) throw new CamfleetError("UNAVAILABLE", "the gateway is stopping");
    reply.hijack();
    const client = feeds.open(filter, cursor, sseSink(reply, `s${cursor.status}-d${cursor.detection}`));
    log.debug({ filter, id: client.id }, "SSE client connected");
  });

  const pending = new WeakMap<FastifyRequest, FeedRequest>();
  app.register(async (scope) => {
    await scope.register(websocket, { options: { maxPayload: 4096 } });
    scope.route({
      method: "GET",
      url: "/ws",
      // Validated before the upgrade, so a bad filter is an HTTP 400, not a socket that closes.
      preHandler: async (req) => void pending.set(req, await feedRequest(feeds, req)),
      handler: async () => {
        throw new CamfleetError("INVALID_ARGUMENT", "GET /ws needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)");
      },
      wsHandler: (socket, req) => {
        const fr = pending.get(req);
        if (fr === undefined) return socket.close(1011, "internal: request not validated");
        if (feeds.stopping) return socket.close(1001, "shutdown: the gateway is stopping");
        const id = `s${fr.cursor.status}-d${fr.cursor.detection}`;
        socket.send(JSON.stringify({ type: "ready", id }));
        const client = feeds.open(fr.filter, fr.cursor, wsSink(socket));
        log.debug({ filter: fr.filter, id: client.id }, "WebSocket client connected");
      },
    });
  });

  const history = async (scope: Scope, q: z.output<typeof HistoryQuerySchema>, label?: string) => {
    const since = q.since !== undefined ? parseSince(q.since) : undefined;
    const until = q.until !== undefined ? parseSince(q.until) : undefined;
    if (since !== undefined && until !== undefined && since.getTime() > until.getTime()) {
      throw new CamfleetError("INVALID_ARGUMENT", "since is after until");
    }
    const order = q.order ?? "newest";
    const page = await detectionHistory(store, {
      scope,
      limit: q.limit ?? DEFAULT_HISTORY_LIMIT,
      order,
      ...(label !== undefined ? { label } : {}),
      ...(deps.historyScanBudget !== undefined ? { scanBudget: deps.historyScanBudget } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {}),
      ...(q.cursor !== undefined ? { cursor: Number(q.cursor) } : {}),
    }).catch((err: unknown) => {
      throw toCamfleetError(err, "JetStream");
    });
    return { order, detections: page.events.map((e) => e.event), next: page.next };
  };

  app.get<{ Params: { id: string } }>("/cameras/:id/detections", async (req, reply) => {
    const camera = assertId("camera", req.params.id);
    const q = parseOrThrow(HistoryQuerySchema, req.query ?? {}, "query");
    return reply.header("cache-control", "no-store").send({ camera, ...(await history({ camera }, q)) });
  });

  // Across cameras: every camera unless `camera`, `tenant` or `site` narrow it; `label` keeps events that found one.
  app.get("/detections", async (req, reply) => {
    const { camera, tenant, site, label, ...q } = parseOrThrow(FleetHistoryQuerySchema, req.query ?? {}, "query");
    const scope: Scope = { ...(camera !== undefined ? { camera } : {}), ...(tenant !== undefined ? { tenant } : {}), ...(site !== undefined ? { site } : {}) };
    return reply.header("cache-control", "no-store").send(await history(scope, q, label));
  });

  return feeds;
}
