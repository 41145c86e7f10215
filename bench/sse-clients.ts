// A child process of bench/event-fanout.ts: SSE clients of one gateway's
// GET /events, and (on request) a plain JetStream ordered consumer on the
// same streams, the baseline. Each event carries its publish time in `ts`
// (ms since the epoch, set by the publisher just before it publishes); on
// receipt the latency is this process's wall clock minus `ts`.
//
//   node --import tsx bench/sse-clients.ts <gateway url> <nats url>
//
// Commands, one JSON object a line on stdin; answers, one a line on stdout:
//   {"cmd":"open","n":50}  opens n SSE clients      → {"opened":n}  (all have their 200 and first record)
//   {"cmd":"nats"}         starts the baseline       → {"nats":"ready"}
//   {"cmd":"reset"}        forgets what was measured → {"reset":true}
//   {"cmd":"report"}       what was measured         → {"report":{...}}
//   {"cmd":"close"}        closes every SSE client   → {"closed":n}
// The end of stdin (the benchmark is gone) ends the process.

import { request, type ClientRequest } from "node:http";
import { createInterface } from "node:readline";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { createParser } from "eventsource-parser";
import { STREAMS } from "../subjects/index.ts";

const [gatewayUrl, natsUrl] = process.argv.slice(2);
if (gatewayUrl === undefined || natsUrl === undefined) throw new Error("usage: sse-clients.ts <gateway url> <nats url>");

/** Latency histogram with 0.1 ms buckets: bucket → count. Samples below 0 (clock granularity, see event-fanout.ts) go to 0. */
class Histogram {
  readonly buckets = new Map<number, number>();
  count = 0;
  add(ms: number): void {
    const b = Math.max(0, Math.round(ms * 10));
    this.buckets.set(b, (this.buckets.get(b) ?? 0) + 1);
    this.count++;
  }
  toJSON(): Array<[number, number]> {
    return [...this.buckets];
  }
}

let sse = new Histogram();
let nats = new Histogram();
/** Clients ended by the gateway (an `end` event, e.g. slow_client) or by a connection error since the last reset. */
let ended = 0;
let errors = 0;
const lastErrors: string[] = [];

const now = () => performance.timeOrigin + performance.now();

/**
 * Publish-to-receipt latency of an event's JSON. `ts` is read with a pattern,
 * not JSON.parse: 100 clients in 2 processes on 2 cores are the benchmark's
 * own bottleneck at high rates, and only `ts` is needed (`"ts":` is no other
 * key's ending: those have `_ts":`).
 */
const TS = /"ts":(\d+)/;
function latencyOf(data: string): number | undefined {
  const m = TS.exec(data);
  return m ? now() - Number(m[1]) : undefined;
}

interface Client {
  req: ClientRequest;
  closing: boolean;
}
const clients = new Set<Client>();

/** One SSE client: resolves when the response is 200 and the gateway's first record (its `id:`) arrived. */
function openClient(): Promise<void> {
  return new Promise((resolve, reject) => {
    const client: Client = { req: undefined as unknown as ClientRequest, closing: false };
    let first = true;
    const parser = createParser({
      onEvent: (e) => {
        if (e.event === "end") {
          ended++;
          return;
        }
        const ms = latencyOf(e.data);
        if (ms !== undefined) sse.add(ms);
      },
      onError: (err) => {
        errors++;
        lastErrors.push(err.message);
      },
    });
    // Its own connection each (agent: false), as 100 browsers would have.
    client.req = request(`${gatewayUrl}/events`, { agent: false, headers: { accept: "text/event-stream" } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new Error(`GET /events: ${res.statusCode}`));
      }
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        parser.feed(chunk);
        if (first) {
          first = false;
          resolve();
        }
      });
      res.on("end", () => clients.delete(client));
    });
    client.req.on("error", (err) => {
      clients.delete(client);
      if (client.closing) return;
      errors++;
      lastErrors.push(err.message);
      reject(err);
    });
    client.req.end();
    clients.add(client);
  });
}

let nc: NatsConnection | undefined;

/** The baseline: an ordered consumer per stream, from the streams' ends, as the gateway's hubs read them. */
async function startBaseline(): Promise<void> {
  nc ??= await connect({ servers: natsUrl, name: "bench-baseline" });
  const js = jetstream(nc);
  for (const stream of [STREAMS.status, STREAMS.detections]) {
    const consumer = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.New });
    const messages = await consumer.consume();
    void (async () => {
      for await (const m of messages) {
        const ms = latencyOf(m.string());
        if (ms !== undefined) nats.add(ms);
      }
    })();
  }
}

const say = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

async function handle(cmd: { cmd: string; n?: number }): Promise<void> {
  switch (cmd.cmd) {
    case "open":
      await Promise.all(Array.from({ length: cmd.n ?? 1 }, () => openClient()));
      return say({ opened: clients.size });
    case "nats":
      await startBaseline();
      return say({ nats: "ready" });
    case "reset":
      sse = new Histogram();
      nats = new Histogram();
      ended = 0;
      errors = 0;
      lastErrors.length = 0;
      return say({ reset: true });
    case "report":
      return say({ report: { sse, sseEvents: sse.count, nats, natsEvents: nats.count, ended, errors, lastErrors: lastErrors.slice(-3), open: clients.size } });
    case "close": {
      const n = clients.size;
      for (const c of clients) {
        c.closing = true;
        c.req.destroy();
      }
      clients.clear();
      return say({ closed: n });
    }
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

// One command at a time, in order.
let queue = Promise.resolve();
createInterface({ input: process.stdin })
  .on("line", (line) => {
    queue = queue.then(() => handle(JSON.parse(line) as { cmd: string; n?: number })).catch((err: unknown) => say({ error: (err as Error).message }));
  })
  .on("close", () => {
    for (const c of clients) c.req.destroy();
    void queue.finally(() => void (nc?.close() ?? Promise.resolve()).finally(() => process.exit(0)));
  });
