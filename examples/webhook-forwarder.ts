// Forwards camfleet detections to a webhook: one POST per DetectionEvent
// (JSON body, the event as stored), acked only after a 2xx answer. Built on
// the runtime's alert consumer, so it is at-least-once: an event whose POST
// failed, or that was in flight when this process died, is sent again;
// receivers de-duplicate by the event's `id` (also sent as Idempotency-Key).
//
//   NATS_URL=nats://127.0.0.1:4222 WEBHOOK_URL=https://example.com/hook \
//     npx tsx examples/webhook-forwarder.ts [--durable webhook] [--tenant t] [--site s] [--camera c]
//
// NATS credentials and TLS come from the same variables as every camfleet
// process (NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS,
// NATS_CA/NATS_CERT/NATS_KEY; deploy/nats/ has an alert-consumer user for it).
//
// Each delivery is tried up to 3 times here (0.5 s, 1 s apart); then the
// event goes back to JetStream and comes again after a delay that grows to a
// minute, for as long as the receiver refuses it.

import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { backoffDelay, ConfigError, connectNats, createLogger, loadConfig, realClock, sleep, startAlertConsumer, type Backoff, type Config } from "../runtime/index.ts";

/** Between the attempts of one delivery: 0.5 s, then 1 s (the runtime's formula, jitter off). */
const RETRY: Backoff = { initialMs: 500, maxMs: 5_000, jitter: "none" };
import { redact, type DetectionEvent } from "../subjects/index.ts";

export interface ForwardOptions {
  url: string;
  /** Per attempt, ms. Default 5000. */
  timeoutMs?: number;
  /** Attempts per delivery. Default 3. */
  attempts?: number;
  headers?: Record<string, string>;
}

/** POSTs one event; resolves on 2xx, throws (with the status) otherwise, after `attempts` tries with backoff. */
export async function forward(event: DetectionEvent, options: ForwardOptions): Promise<void> {
  const attempts = options.attempts ?? 3;
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await sleep(realClock, backoffDelay(RETRY, i));
    try {
      const res = await fetch(options.url, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": event.id, ...options.headers },
        body: JSON.stringify(event),
        signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
      });
      await res.arrayBuffer().catch(() => undefined); // free the socket
      if (res.status >= 200 && res.status < 300) return;
      last = new Error(`webhook answered ${res.status}`);
    } catch (err) {
      last = err;
    }
  }
  throw last instanceof Error ? last : new Error(String(last));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      durable: { type: "string", default: "webhook" },
      tenant: { type: "string" },
      site: { type: "string" },
      camera: { type: "string" },
    },
  });
  const url = process.env.WEBHOOK_URL;
  if (url === undefined || !/^https?:\/\//.test(url)) {
    process.stderr.write("webhook-forwarder: set WEBHOOK_URL to an http:// or https:// URL\n");
    process.exit(78);
  }
  let config: Config;
  try {
    config = loadConfig(process.env, "client");
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`webhook-forwarder: invalid configuration: ${problem}\n`);
    process.exit(78);
  }
  const logger = createLogger({ node: "webhook-forwarder", level: config.logLevel });
  const servers = config.natsServers ?? ["nats://127.0.0.1:4222"];
  // Retries while NATS is not up yet; wrong credentials or TLS end it at once (UNAUTHENTICATED / UNAVAILABLE).
  const nc = await connectNats({ servers, auth: config.natsAuth, name: "camfleet-webhook-forwarder", logger, retryFirstConnect: true });
  const consumer = await startAlertConsumer(nc, {
    durable: values.durable,
    scope: { ...(values.tenant !== undefined ? { tenant: values.tenant } : {}), ...(values.site !== undefined ? { site: values.site } : {}), ...(values.camera !== undefined ? { camera: values.camera } : {}) },
    logger,
    handler: async (event, meta) => {
      await forward(event, { url });
      logger.debug({ id: event.id, seq: meta.seq, deliveries: meta.deliveries }, "forwarded");
    },
  });
  logger.info({ webhook: redact(url), durable: values.durable, pending: consumer.pendingAtStart }, "forwarding detections");
  const stop = async () => {
    await consumer.stop();
    await nc.drain();
    process.exit(0);
  };
  process.once("SIGINT", () => void stop());
  process.once("SIGTERM", () => void stop());
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
