import { jetstreamManager, JetStreamApiCodes, JetStreamApiError, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { BUCKETS, STREAMS, subjects } from "../../subjects/index.ts";
import type { Logger } from "../logger.ts";
import { retryTransient } from "./nats.ts";

const NS_PER_MS = 1_000_000;
/** JSStreamNameExistErr and JSStreamSubjectOverlapErr: the client library has no constants for them. */
const STREAM_NAME_IN_USE = 10058;
const STREAM_SUBJECT_OVERLAP = 10065;

export interface StreamLimits {
  /** How long events are kept, ms. Status default 24 h, detections 7 days. */
  maxAgeMs: number;
  /** Bytes kept at most; -1 = no limit. Status default 1 GiB, detections 4 GiB. */
  maxBytes: number;
  /** Replicas of this stream; default: the `replicas` of the set-up. */
  replicas?: number;
}

export interface JetStreamSetupOptions {
  /** Replicas of every stream and bucket; default: 1 on a single server, 3 on a cluster of three or more. */
  replicas?: number;
  status?: Partial<StreamLimits>;
  detections?: Partial<StreamLimits>;
  logger?: Logger;
  /**
   * How long a step keeps retrying while JetStream cannot answer (a cluster
   * still forming, a meta leader busy creating replicated assets), ms. Default 30000.
   */
  retryForMs?: number;
}

const DEFAULT_LIMITS: Record<"status" | "detections", StreamLimits> = {
  status: { maxAgeMs: 24 * 3600_000, maxBytes: 1024 ** 3 },
  detections: { maxAgeMs: 7 * 24 * 3600_000, maxBytes: 4 * 1024 ** 3 },
};

/** Window in which JetStream drops a repeated Nats-Msg-Id: a retried publish is never a duplicate. */
const DUPLICATE_WINDOW_MS = 2 * 60_000;

/**
 * Replicas when none are configured: 1 on a lone server, 3 on a cluster.
 * A server's INFO lists the client URLs of its cluster's servers; a cluster
 * that hides them (`no_advertise`) still names its cluster, and then 3 is
 * assumed (CAMFLEET_REPLICAS overrides).
 */
export function defaultReplicas(nc: NatsConnection): number {
  const info = nc.info;
  if (info?.cluster === undefined || info.cluster === "") return 1;
  const advertised = info.connect_urls?.length ?? 0;
  return advertised === 0 || advertised >= 3 ? 3 : 1;
}

/**
 * Makes sure the streams and KV buckets of the contract (docs/contract.md) exist with the wanted
 * settings. Safe to run on every node start, concurrently from many nodes:
 * "already exists" is success, and a stream whose limits differ is updated.
 */
export async function ensureJetStream(nc: NatsConnection, options: JetStreamSetupOptions = {}): Promise<{ replicas: number }> {
  const replicas = options.replicas ?? defaultReplicas(nc);
  const step = <T>(what: string, work: () => Promise<T>) =>
    retryTransient(what, work, { ...(options.logger !== undefined ? { logger: options.logger } : {}), deadlineMs: options.retryForMs ?? 30_000 });
  const jsm = await step("JetStream set-up", () => jetstreamManager(nc));

  const streams: Array<{ name: string; subject: string; limits: StreamLimits }> = [
    { name: STREAMS.status, subject: subjects.statusAll, limits: { ...DEFAULT_LIMITS.status, ...options.status } },
    { name: STREAMS.detections, subject: subjects.detectionsAll, limits: { ...DEFAULT_LIMITS.detections, ...options.detections } },
  ];
  for (const s of streams) {
    const want: Partial<StreamConfig> & { name: string } = {
      name: s.name,
      subjects: [s.subject],
      num_replicas: s.limits.replicas ?? replicas,
      max_age: s.limits.maxAgeMs * NS_PER_MS,
      max_bytes: s.limits.maxBytes,
      duplicate_window: DUPLICATE_WINDOW_MS * NS_PER_MS,
    };
    await step(`stream ${s.name}`, async () => {
      try {
        const info = await jsm.streams.info(s.name);
        const have = info.config;
        if (have.num_replicas !== want.num_replicas || have.max_age !== want.max_age || have.max_bytes !== want.max_bytes) {
          await jsm.streams.update(s.name, { ...have, ...want });
          options.logger?.info({ stream: s.name, replicas: want.num_replicas, maxAgeMs: s.limits.maxAgeMs, maxBytes: s.limits.maxBytes }, "updated stream limits");
        }
      } catch (err) {
        if (!(err instanceof JetStreamApiError) || err.code !== JetStreamApiCodes.StreamNotFound) throw err;
        await addIgnoringRace(() => jsm.streams.add(want), () => streamHasSubject(jsm, s.name, s.subject));
        options.logger?.info({ stream: s.name, replicas: want.num_replicas }, "created stream");
      }
    });
  }

  const kvm = new Kvm(nc);
  // History 1: only the current value matters; compare-and-set works on the latest revision.
  // kvm.create is "info, then add if not found": two nodes may both add. A
  // lost race is answered "name in use" or, seen on nats-server 2.9 under
  // load, "subjects overlap"; the bucket is there then, and a second create
  // finds it. A real overlap (a foreign stream on the bucket's subjects) fails
  // the second create too, with the server's own words.
  const bucket = (name: string, opts: Parameters<Kvm["create"]>[1]) =>
    step(`bucket ${name}`, () => addIgnoringRace(() => kvm.create(name, opts), async () => (await kvm.create(name, opts), true)));
  await bucket(BUCKETS.cameras, { replicas, history: 5 });
  await bucket(BUCKETS.leases, { replicas, history: 1 });
  await bucket(BUCKETS.nodes, { replicas, history: 1 });
  // Relay claims are renewed every few seconds; max age clears the claims of gateways long gone.
  await bucket(BUCKETS.relays, { replicas, history: 1, ttl: RELAY_BUCKET_MAX_AGE_MS });
  return { replicas };
}

/** Entries of camfleet_relays not written for this long are removed by the server, ms. */
const RELAY_BUCKET_MAX_AGE_MS = 5 * 60_000;

/**
 * Two nodes starting together may both try to add. The loser's add fails with
 * "name in use" or "subjects overlap"; `wonElsewhere` then says whether what we
 * wanted exists after all (another node's add), and only then is it success.
 */
async function addIgnoringRace(add: () => Promise<unknown>, wonElsewhere: () => Promise<boolean>): Promise<void> {
  try {
    await add();
  } catch (err) {
    const raced = err instanceof JetStreamApiError && (err.code === STREAM_NAME_IN_USE || err.code === STREAM_SUBJECT_OVERLAP);
    if (raced && (await wonElsewhere())) return;
    throw err;
  }
}

/** The stream exists and captures `subject`: what ensureJetStream wanted. */
async function streamHasSubject(jsm: JetStreamManager, name: string, subject: string): Promise<boolean> {
  try {
    return (await jsm.streams.info(name)).config.subjects?.includes(subject) ?? false;
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return false;
    throw err;
  }
}
