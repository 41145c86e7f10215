import type { OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import { Gauge, type Registry } from "prom-client";
import type { ControlClient, Logger } from "../../runtime/index.ts";
import { assertId, CamfleetError, FEED_FPS, http as httpBodies, parseOrThrow } from "../../subjects/index.ts";
import type { GatewayCore } from "../core.ts";

/**
 * Pictures of a camera, made by its owner node over NATS
 * (`camera.<id>.snapshot`, docs/contract.md):
 *   GET /cameras/{id}/snapshot.jpg[?width=]        the latest frame as a JPEG
 *   GET /cameras/{id}/stream/feed[?width=&fps=]    MJPEG (multipart/x-mixed-replace), 1 frame/s by default
 * A feed is one loop of snapshot requests per camera and width on this
 * gateway, however many clients watch it; the loop ends with its last
 * client. Nothing is asked of the node while nobody watches.
 */
export interface PictureDeps {
  core: GatewayCore;
  control: ControlClient;
  logger: Logger;
  /** Where the feed gauges go (camfleet_feed_loops, camfleet_feed_clients). */
  registry?: Registry;
}

const BOUNDARY = "camfleet-frame";
/** A client with this much unsent skips frames instead of queueing them (a slow link gets fewer frames, never more memory), bytes. */
const MAX_CLIENT_BACKLOG = 2 * 1024 * 1024;

export function pictureRoutes(app: FastifyInstance, deps: PictureDeps): Feeds {
  const feeds = new Feeds(deps);
  app.addHook("preClose", async () => feeds.stop());
  if (deps.registry !== undefined) {
    const registers = [deps.registry];
    new Gauge({ name: "camfleet_feed_loops", help: "MJPEG feed loops on this gateway: one per camera and width that someone watches (a closed one until its last request settled)", registers, collect() { this.set(feeds.running); } });
    new Gauge({ name: "camfleet_feed_clients", help: "MJPEG feed clients connected to this gateway", registers, collect() { this.set(feeds.clients); } });
  }

  app.get<{ Params: { id: string } }>("/cameras/:id/snapshot.jpg", async (req, reply) => {
    const camera = assertId("camera", req.params.id);
    const q = parseOrThrow(httpBodies.snapshotQuery, req.query ?? {}, "query");
    const jpeg = await snapshot(deps, camera, q.width);
    return reply.code(200).header("content-type", "image/jpeg").header("cache-control", "no-store").send(jpeg);
  });

  app.get<{ Params: { id: string } }>("/cameras/:id/stream/feed", async (req, reply) => {
    const camera = assertId("camera", req.params.id);
    const q = parseOrThrow(httpBodies.feedQuery, req.query ?? {}, "query");
    if (feeds.stopping) throw new CamfleetError("UNAVAILABLE", "the gateway is stopping");
    // The first frame decides the answer: an unknown or stopped camera is a 404/503 with a body, not an empty stream.
    const feed = feeds.get(camera, q.width);
    // A client that leaves while its first frame is decoded must not join the loop (its close has passed by then).
    let gone = false;
    reply.raw.once("close", () => (gone = true));
    const first = await feed.firstFrame().catch((err: unknown) => {
      feeds.release(feed);
      throw err;
    });
    reply.hijack(); // from here the response is ours, fastify sends nothing
    if (gone) return feeds.release(feed);
    // Headers fastify's hooks set (CORS) go out too: after hijack() fastify writes none.
    feed.attach(reply.raw, q.fps ?? FEED_FPS.default, first, reply.getHeaders() as OutgoingHttpHeaders);
  });

  return feeds;
}

/**
 * One snapshot through the owner. No responders is told apart by the spec:
 * an unknown camera is NOT_FOUND, a known one that no node runs right now
 * (stopped, or waiting for a node) is UNAVAILABLE.
 */
async function snapshot(deps: PictureDeps, camera: string, width: number | undefined): Promise<Buffer> {
  try {
    return await deps.control.cameraSnapshot(camera, width);
  } catch (err) {
    if (!(err instanceof CamfleetError) || err.code !== "NOT_FOUND") throw err;
    const spec = await deps.core.cameraSpec(camera); // NOT_FOUND when there is no such camera
    throw new CamfleetError("UNAVAILABLE", `camera ${camera} is not running on any node${spec.enabled ? " (it is waiting for a node)" : " (it is stopped)"}`);
  }
}

interface FeedClient {
  res: ServerResponse;
  /** Minimum time between two frames to this client, ms. */
  intervalMs: number;
  /** performance.now() of the last frame written to it. */
  lastSent: number;
}

/** Every feed loop of this gateway, by camera and width. */
export class Feeds {
  readonly #loops = new Map<string, FeedLoop>();
  /** Closed loops whose last snapshot request has not settled yet: they still count as running. */
  #finishing = 0;
  stopping = false;

  constructor(private readonly deps: PictureDeps) {}

  /** The loop of a camera and width, made (not yet running) if none exists; each get() is paired with attach() or release(). */
  get(camera: string, width: number | undefined): FeedLoop {
    const key = `${camera}/${width ?? 0}`;
    let loop = this.#loops.get(key);
    if (loop === undefined) {
      loop = new FeedLoop(camera, width, this.deps, (inFlight) => {
        this.#loops.delete(key);
        if (inFlight === undefined) return;
        this.#finishing++;
        const done = () => void this.#finishing--;
        inFlight.then(done, done); // its failure is the tick's to handle
      });
      this.#loops.set(key, loop);
    }
    loop.pending++;
    return loop;
  }

  release(loop: FeedLoop): void {
    loop.pending--;
    loop.endIfIdle();
  }

  /** Loops running now, or closed with a snapshot request still out (metrics, tests). */
  get running(): number {
    return this.#loops.size + this.#finishing;
  }

  /** Clients connected to all loops. */
  get clients(): number {
    let n = 0;
    for (const loop of this.#loops.values()) n += loop.clients;
    return n;
  }

  stop(): void {
    this.stopping = true;
    for (const loop of [...this.#loops.values()]) loop.close();
  }
}

/** One camera and width: asks the owner for a snapshot at the fastest rate its clients want, and writes each to every client due one. */
class FeedLoop {
  readonly #clients = new Set<FeedClient>();
  /** Requests between get() and attach()/release(): they keep the loop alive while the first frame is awaited. */
  pending = 0;
  #latest?: Buffer;
  #first?: Promise<Buffer>;
  #timer?: NodeJS.Timeout;
  #closed = false;
  #running = false;
  /** The tick's snapshot request while it is out. */
  #inFlight?: Promise<Buffer>;

  constructor(
    readonly camera: string,
    readonly width: number | undefined,
    private readonly deps: PictureDeps,
    /** Called once, at close, with the snapshot request still out, if any. */
    private readonly onEnd: (inFlight: Promise<unknown> | undefined) => void,
  ) {}

  get clients(): number {
    return this.#clients.size;
  }

  /** The frame a new client starts with: the latest one, or the loop's first (whose failure is the client's HTTP error). */
  firstFrame(): Promise<Buffer> {
    if (this.#latest !== undefined) return Promise.resolve(this.#latest);
    // Clients arriving together share one request; once it settled, the next one asks anew.
    this.#first ??= snapshot(this.deps, this.camera, this.width)
      .then((jpeg) => {
        this.#latest ??= jpeg;
        return jpeg;
      })
      .finally(() => (this.#first = undefined));
    return this.#first;
  }

  attach(res: ServerResponse, fps: number, first: Buffer, extraHeaders: OutgoingHttpHeaders = {}): void {
    this.pending--;
    const client: FeedClient = { res, intervalMs: 1000 / fps, lastSent: 0 };
    res.writeHead(200, {
      ...extraHeaders,
      "content-type": `multipart/x-mixed-replace; boundary=${BOUNDARY}`,
      "cache-control": "no-store",
      "x-accel-buffering": "no",
      connection: "keep-alive",
    });
    res.socket?.setNoDelay(true);
    this.#clients.add(client);
    this.#write(client, first);
    res.on("close", () => {
      this.#clients.delete(client);
      this.endIfIdle();
    });
    if (!this.#running) {
      this.#running = true;
      this.#schedule(client.intervalMs);
    }
  }

  /** Ends the loop once no client watches and none is about to. */
  endIfIdle(): void {
    if (this.#clients.size === 0 && this.pending === 0) this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.onEnd(this.#inFlight);
    for (const c of this.#clients) c.res.end();
    this.#clients.clear();
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => void this.#tick(), Math.max(0, delayMs));
  }

  async #tick(): Promise<void> {
    const started = performance.now();
    try {
      this.#inFlight = snapshot(this.deps, this.camera, this.width);
      const jpeg = await this.#inFlight;
      if (this.#closed) return;
      this.#latest = jpeg;
      const now = performance.now();
      // A little slack, so a client at the loop's own rate is not skipped for a millisecond of jitter.
      for (const c of this.#clients) if (now - c.lastSent >= c.intervalMs * 0.9) this.#write(c, jpeg);
    } catch (err) {
      // The camera may come back (a restart, a failover): clients keep their last frame and the loop keeps asking;
      // a client arriving now gets the error, not a stale frame.
      this.#latest = undefined;
      this.deps.logger.debug({ camera: this.camera, err }, "feed snapshot failed");
    } finally {
      this.#inFlight = undefined;
    }
    const fastest = Math.min(...[...this.#clients].map((c) => c.intervalMs));
    if (Number.isFinite(fastest)) this.#schedule(fastest - (performance.now() - started));
  }

  #write(c: FeedClient, jpeg: Buffer): void {
    if (c.res.writableLength > MAX_CLIENT_BACKLOG || c.res.destroyed) return;
    c.lastSent = performance.now();
    c.res.write(`--${BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`);
    c.res.write(jpeg);
    c.res.write("\r\n");
  }
}
