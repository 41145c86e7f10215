import { jetstreamManager, JetStreamApiCodes, JetStreamApiError, type AccountLimits, type JetStreamManager, type StreamConfig, type StreamInfo } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { BUCKETS, STREAMS, subjects } from "../../subjects/index.ts";
import type { Config } from "../config.ts";
import type { Logger } from "../logger.ts";
import { LOG_MESSAGES } from "../log-messages.ts";
import { describeRoom, formatBytes, isNoRoomError, isStoreFailedError, JetStreamStorageError, measureRoom, STORE_FAILED_ATTEMPTS, type StorageKind } from "./jetstream-room.ts";
import { retryTransient } from "./nats.ts";

// Who owns the stream configuration. Every node and stand-alone gateway runs
// ensureJetStream() at start: it creates what is missing and never changes an
// existing stream. A process whose configuration differs from a stream's says
// so once (a warning naming the fields, old → new) and runs with the stream as
// it is. Only the operator's `camfleet streams apply` (applyStreams below)
// changes an existing stream. Before, each process rewrote the limits with its
// own values, so processes with different settings (or none) fought over them.
//
// Sizes. A size the operator did not set defaults to what fits the server:
// the preferred sizes (status 1 GiB, detections 4 GiB) where the store has room
// for twice that, else both scaled down to take half the room left, so KV
// buckets and other users of the server keep the other half. A 2 GiB store
// gets 204 MiB + 819 MiB; a 256 MiB store 25 MiB + 102 MiB. A configured size
// that does not fit fails with one line naming the variable, the size asked
// and the room there is (jetstream-room.ts says how the room is measured).

const NS_PER_MS = 1_000_000;
/** JSStreamNameExistErr and JSStreamSubjectOverlapErr: the client library has no constants for them. */
const STREAM_NAME_IN_USE = 10058;
const STREAM_SUBJECT_OVERLAP = 10065;

export interface StreamLimits {
  /** How long events are kept, ms. Unset: status 24 h, detections 7 days. */
  maxAgeMs?: number;
  /** Bytes kept at most (one replica); -1 = no limit. Unset: sized to the store (see above). */
  maxBytes?: number;
  /** Replicas of this stream. Unset: the `replicas` of the set-up. */
  replicas?: number;
}

export interface JetStreamSetupOptions {
  /** Replicas of every stream and bucket (CAMFLEET_REPLICAS). Unset: 1 on a single server, 3 on a cluster of three or more. */
  replicas?: number;
  /** Where streams and buckets keep their messages (CAMFLEET_STORAGE). Unset: file. */
  storage?: StorageKind;
  /** Settings of CAMFLEET_STATUS; each one unset is a default (and no opinion about an existing stream). */
  status?: StreamLimits;
  /** Settings of CAMFLEET_DETECTIONS, as for status. */
  detections?: StreamLimits;
  logger?: Logger;
  /**
   * How long a step keeps retrying while JetStream cannot answer (a cluster
   * still forming, a meta leader busy creating replicated assets), ms. Default 30000.
   */
  retryForMs?: number;
}

type StreamKey = "status" | "detections";

/** What camfleet knows about one of its streams: contract names, defaults, and the variables that set them. */
interface StreamDefinition {
  key: StreamKey;
  name: string;
  subject: string;
  preferredBytes: number;
  defaultMaxAgeMs: number;
  vars: { maxBytes: string; maxAge?: string; replicas: string };
}

const STREAM_PLANS: ReadonlyArray<StreamDefinition> = [
  {
    key: "status",
    name: STREAMS.status,
    subject: subjects.statusAll,
    preferredBytes: 1024 ** 3,
    defaultMaxAgeMs: 24 * 3600_000,
    vars: { maxBytes: "CAMFLEET_STATUS_MAX_BYTES", replicas: "CAMFLEET_REPLICAS" },
  },
  {
    key: "detections",
    name: STREAMS.detections,
    subject: subjects.detectionsAll,
    preferredBytes: 4 * 1024 ** 3,
    defaultMaxAgeMs: 7 * 24 * 3600_000,
    vars: { maxBytes: "CAMFLEET_DETECTIONS_MAX_BYTES", maxAge: "CAMFLEET_DETECTIONS_MAX_AGE_S", replicas: "CAMFLEET_DETECTIONS_REPLICAS" },
  },
];

/** Default-sized streams take at most this share of the room the store has left. */
const DEFAULT_SHARE = 0.5;
/** A default size below this is useless: fail and ask for room or explicit sizes instead. */
const MIN_DEFAULT_BYTES = 1024 * 1024;
/** Tries at creating one stream when a no-room answer may have been another process's probe. */
const CREATE_ATTEMPTS = 3;
/** Wait before measuring again after a no-room answer, ms, times the attempt. */
const ROOM_SETTLE_MS = 250;

/** Window in which JetStream drops a repeated Nats-Msg-Id: a retried publish is never a duplicate. */
const DUPLICATE_WINDOW_MS = 2 * 60_000;

/** Entries of camfleet_relays not written for this long are removed by the server, ms. */
const RELAY_BUCKET_MAX_AGE_MS = 5 * 60_000;

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

/** The set-up options of a process's configuration: what its variables set, nothing more. */
export function jetStreamOptions(config: Config, logger?: Logger): JetStreamSetupOptions {
  return {
    ...(config.replicas !== undefined ? { replicas: config.replicas } : {}),
    ...(config.storage !== undefined ? { storage: config.storage } : {}),
    status: config.statusStream,
    detections: config.detectionsStream,
    ...(logger !== undefined ? { logger } : {}),
  };
}

/** One stream setting as a stream has it and as this process's configuration wants it. */
export interface FieldChange {
  field: "subjects" | "max_bytes" | "max_age" | "num_replicas" | "storage" | "duplicate_window";
  from: unknown;
  to: unknown;
  /** The variable that sets it, when one does. */
  variable?: string;
}

export interface StreamChange {
  stream: string;
  /** What was done (or, in a dry run, would be done). */
  action: "created" | "updated" | "unchanged";
  /** For "updated": the fields changed; for "created": the settings it got. */
  changes: FieldChange[];
}

/** "max_bytes 1.0 GiB → 64 MiB (CAMFLEET_DETECTIONS_MAX_BYTES), max_age 7d → 1h" */
export function describeChanges(changes: readonly FieldChange[]): string {
  return changes
    .map((c) => `${c.field} ${showValue(c.field, c.from)} → ${showValue(c.field, c.to)}${c.variable !== undefined ? ` (${c.variable})` : ""}`)
    .join(", ");
}

interface Plan extends StreamDefinition {
  configured: StreamLimits;
  replicas: number;
  /** Replicas came from a variable (so they are an opinion about an existing stream). */
  replicasConfigured: boolean;
}

interface Context {
  jsm: JetStreamManager;
  replicas: number;
  storage: StorageKind;
  storageConfigured: boolean;
  limits: AccountLimits | undefined;
  plans: Plan[];
  logger: Logger | undefined;
  step: <T>(what: string, work: () => Promise<T>) => Promise<T>;
}

async function context(nc: NatsConnection, options: JetStreamSetupOptions): Promise<Context> {
  const replicas = options.replicas ?? defaultReplicas(nc);
  const step = <T>(what: string, work: () => Promise<T>) =>
    retryTransient(what, work, { ...(options.logger !== undefined ? { logger: options.logger } : {}), deadlineMs: options.retryForMs ?? 30_000 }).catch((err: unknown) => {
      // The one-line storage error reaches the operator as it is, not inside "<step> failed: …".
      throw err instanceof Error && err.cause instanceof JetStreamStorageError ? err.cause : err;
    });
  const jsm = await step("JetStream set-up", () => jetstreamManager(nc));
  // The account's own limits (-1 where it has none, the default: then only the
  // server's store limit applies, which clients cannot read; see jetstream-room.ts).
  const account = await step("JetStream account info", () => jsm.getAccountInfo());
  const plans = STREAM_PLANS.map((p): Plan => {
    const configured = options[p.key] ?? {};
    const own = configured.replicas ?? options.replicas;
    return { ...p, configured, replicas: own ?? replicas, replicasConfigured: own !== undefined };
  });
  return {
    jsm,
    replicas,
    storage: options.storage ?? "file",
    storageConfigured: options.storage !== undefined,
    limits: account.limits,
    plans,
    logger: options.logger,
    step,
  };
}

/**
 * Makes sure the streams and KV buckets of the contract (docs/contract.md)
 * exist. Safe to run on every node start, concurrently from many nodes:
 * "already exists" is success. An existing stream is never changed: where it
 * differs from this process's configuration, that is logged once (warn) and
 * the stream stays as it is (`camfleet streams apply` changes it). Throws a
 * JetStreamStorageError (one line, for the operator) when a stream or bucket
 * does not fit the store.
 */
export async function ensureJetStream(nc: NatsConnection, options: JetStreamSetupOptions = {}): Promise<{ replicas: number }> {
  const ctx = await context(nc, options);
  const found = await readStreams(ctx);
  const missing = ctx.plans.filter((p) => found.get(p.key) === undefined);
  // Missing streams are sized together, so that they share the room as documented.
  const sizes = await ctx.step("sizing streams", () => planSizes(ctx, missing));
  for (const plan of ctx.plans) {
    const have = found.get(plan.key);
    if (have === undefined) {
      await ctx.step(`stream ${plan.name}`, () => createStream(ctx, plan, sizes.get(plan.key)!));
      continue;
    }
    const differences = diff(ctx, plan, have.config);
    if (differences.length > 0) {
      ctx.logger?.warn({ stream: plan.name, differences: describeChanges(differences), fields: differences }, LOG_MESSAGES.streamSettingsDiffer);
    }
  }

  const kvm = new Kvm(nc);
  // History 1: only the current value matters; compare-and-set works on the latest revision.
  // kvm.create is "info, then add if not found" (it never changes an existing
  // bucket): two nodes may both add. A lost race is answered "name in use" or,
  // seen on nats-server 2.9 under load, "subjects overlap"; the bucket is there
  // then, and a second create finds it. A real overlap (a foreign stream on the
  // bucket's subjects) fails the second create too, with the server's own words.
  const bucket = (name: string, opts: Parameters<Kvm["create"]>[1]) =>
    ctx.step(`bucket ${name}`, async () => {
      try {
        await addIgnoringRace(
          () => kvm.create(name, { ...opts, replicas: ctx.replicas, storage: ctx.storage }),
          async () => (await kvm.create(name, { ...opts, replicas: ctx.replicas, storage: ctx.storage }), true),
        );
      } catch (err) {
        if (!isNoRoomError(err)) throw err;
        const room = await measureRoom(ctx.jsm, { storage: ctx.storage, replicas: ctx.replicas, upToBytes: MIN_DEFAULT_BYTES });
        throw new JetStreamStorageError(`KV bucket ${name} does not fit: ${describeRoom(ctx.storage, room)}`, 1, room);
      }
    });
  await bucket(BUCKETS.cameras, { history: 5 });
  await bucket(BUCKETS.leases, { history: 1 });
  await bucket(BUCKETS.nodes, { history: 1 });
  // Relay claims are renewed every few seconds; max age clears the claims of gateways long gone.
  await bucket(BUCKETS.relays, { history: 1, ttl: RELAY_BUCKET_MAX_AGE_MS });
  return { replicas: ctx.replicas };
}

/**
 * `camfleet streams apply`: creates missing streams and changes existing ones
 * to this process's configuration: the contract's subjects and duplicate
 * window always, and every limit set by a variable (an unset one leaves the
 * stream's value). With `dryRun` nothing changes (sizes are still measured,
 * with probe streams created and deleted at once) and the result says what
 * would, or throws the error the change would meet.
 * KV buckets are left as they are.
 */
export async function applyStreams(nc: NatsConnection, options: JetStreamSetupOptions & { dryRun?: boolean } = {}): Promise<StreamChange[]> {
  const ctx = await context(nc, options);
  const found = await readStreams(ctx);
  const sizes = await ctx.step("sizing streams", () => planSizes(ctx, ctx.plans.filter((p) => found.get(p.key) === undefined)));
  const results: StreamChange[] = [];
  for (const plan of ctx.plans) {
    const have = found.get(plan.key);
    if (have === undefined) {
      const maxBytes = sizes.get(plan.key)!;
      const config = options.dryRun === true ? wantedConfig(ctx, plan, maxBytes) : await ctx.step(`stream ${plan.name}`, () => createStream(ctx, plan, maxBytes));
      results.push({ stream: plan.name, action: "created", changes: creationFields(plan, config) });
      continue;
    }
    const changes = diff(ctx, plan, have.config);
    if (changes.length === 0) {
      results.push({ stream: plan.name, action: "unchanged", changes });
      continue;
    }
    const storage = changes.find((c) => c.field === "storage");
    if (storage !== undefined) {
      throw new Error(
        `CAMFLEET_STORAGE=${String(storage.to)} cannot change stream ${plan.name}, which keeps its messages in ${String(storage.from)}: ` +
          `JetStream cannot change a stream's storage; remove the stream (nats stream rm ${plan.name}; its events are lost) and start a node`,
      );
    }
    await ctx.step(`stream ${plan.name}`, () => updateStream(ctx, plan, have.config, changes, options.dryRun === true));
    results.push({ stream: plan.name, action: "updated", changes });
  }
  return results;
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw err;
  }
}

async function readStreams(ctx: Context): Promise<Map<StreamKey, StreamInfo | undefined>> {
  const found = new Map<StreamKey, StreamInfo | undefined>();
  for (const plan of ctx.plans) found.set(plan.key, await ctx.step(`stream ${plan.name}`, () => streamInfo(ctx.jsm, plan.name)));
  return found;
}

/**
 * The sizes of the given missing streams, measured against the room the store
 * has, before anything is created (a size that does not fit changes nothing):
 * a configured size must fit, else the one-line error names its variable;
 * unset ones get the preferred sizes when the rest of the room is twice their
 * sum, else both scaled down to half of it; the account's per-stream limit caps them.
 */
async function planSizes(ctx: Context, missing: Plan[]): Promise<Map<StreamKey, number>> {
  const sizes = new Map<StreamKey, number>();
  if (missing.length === 0) return sizes;
  const configured = missing.filter((p) => p.configured.maxBytes !== undefined);
  const unsized = missing.filter((p) => p.configured.maxBytes === undefined);
  // -1 (no limit) reserves one byte.
  const reserve = (p: Plan) => Math.max(p.configured.maxBytes!, 1);
  const configuredTotal = configured.reduce((sum, p) => sum + reserve(p), 0);
  const preferred = unsized.reduce((sum, p) => sum + p.preferredBytes, 0);
  let upTo = configuredTotal + Math.ceil(preferred / DEFAULT_SHARE);
  const accountMax = ctx.storage === "memory" ? ctx.limits?.max_memory : ctx.limits?.max_storage;
  if (accountMax !== undefined && accountMax >= 0) upTo = Math.min(upTo, accountMax);
  const replicas = Math.max(...missing.map((p) => p.replicas));
  const room = await measureRoom(ctx.jsm, { storage: ctx.storage, replicas, upToBytes: upTo });

  let left = room;
  for (const p of configured) {
    if (reserve(p) > left) throw doesNotFit(ctx, p, left);
    sizes.set(p.key, p.configured.maxBytes!);
    left -= reserve(p);
  }
  if (unsized.length === 0) return sizes;
  const scale = Math.min(1, (left * DEFAULT_SHARE) / preferred);
  const perStreamMax = ctx.storage === "memory" ? ctx.limits?.memory_max_stream_bytes : ctx.limits?.storage_max_stream_bytes;
  for (const p of unsized) {
    let bytes = Math.floor((p.preferredBytes * scale) / MIN_DEFAULT_BYTES) * MIN_DEFAULT_BYTES;
    if (perStreamMax !== undefined && perStreamMax > 0) bytes = Math.min(bytes, perStreamMax);
    sizes.set(p.key, bytes);
  }
  if ([...sizes.values()].some((b) => b < MIN_DEFAULT_BYTES)) {
    // The smallest preferred size reaches the minimum last.
    const smallest = Math.min(...unsized.map((p) => p.preferredBytes));
    const needed = Math.ceil((MIN_DEFAULT_BYTES * preferred) / smallest / DEFAULT_SHARE) + (room - left);
    throw new JetStreamStorageError(
      `the default sizes of camfleet's streams do not fit: ${describeRoom(ctx.storage, room)} (they need at least ${formatBytes(needed)}); ` +
        `give JetStream more room (max_file_store) or set ${unsized.map((p) => p.vars.maxBytes).join(" and ")}`,
      needed,
      room,
    );
  }
  return sizes;
}

function doesNotFit(ctx: Context, plan: Plan, room: number): JetStreamStorageError {
  return new JetStreamStorageError(
    `${plan.vars.maxBytes}=${plan.configured.maxBytes} does not fit: ${describeRoom(ctx.storage, room)}`,
    Math.max(plan.configured.maxBytes ?? 1, 1),
    room,
    plan.vars.maxBytes,
  );
}

function wantedConfig(ctx: Context, plan: Plan, maxBytes: number): Partial<StreamConfig> & { name: string } {
  return {
    name: plan.name,
    subjects: [plan.subject],
    num_replicas: plan.replicas,
    storage: ctx.storage,
    max_age: (plan.configured.maxAgeMs ?? plan.defaultMaxAgeMs) * NS_PER_MS,
    max_bytes: maxBytes,
    duplicate_window: DUPLICATE_WINDOW_MS * NS_PER_MS,
  };
}

/**
 * Creates a missing stream with the planned size. Another process's probe or
 * stream may take room between the plan and the add: then a configured size
 * that no longer fits is the operator's one-line error, a default one is
 * sized again to the room there is now, and a size that fits after all (a
 * probe held the room for a moment) is tried again, CREATE_ATTEMPTS in all.
 */
async function createStream(ctx: Context, plan: Plan, size: number): Promise<Partial<StreamConfig>> {
  let maxBytes = size;
  for (let attempt = 1; ; attempt++) {
    const want = wantedConfig(ctx, plan, maxBytes);
    try {
      await addIgnoringRace(() => ctx.jsm.streams.add(want), () => streamHasSubject(ctx.jsm, plan.name, plan.subject));
      ctx.logger?.info({ stream: plan.name, replicas: want.num_replicas, maxBytes, storage: ctx.storage }, "created stream");
      return want;
    } catch (err) {
      if (!isNoRoomError(err)) throw err;
      // A cluster's meta leader may not have counted room just freed (another
      // process's probes) yet: give it a moment before measuring again.
      await new Promise((resolve) => setTimeout(resolve, ROOM_SETTLE_MS * attempt));
      if (plan.configured.maxBytes === undefined) {
        // planSizes throws the one-line error when even the minimum no longer fits.
        maxBytes = (await planSizes(ctx, [plan])).get(plan.key)!;
      } else {
        const asked = Math.max(maxBytes, 1);
        const room = await measureRoom(ctx.jsm, { storage: ctx.storage, replicas: plan.replicas, upToBytes: asked });
        if (room < asked) throw doesNotFit(ctx, plan, room);
      }
      if (attempt >= CREATE_ATTEMPTS) throw err;
    }
  }
}

/**
 * Changes an existing stream. A larger size is measured first (in a dry run
 * too), so a size that does not fit is the one-line error and changes nothing;
 * the stream's own reservation counts as room for it, since it is given back.
 */
async function updateStream(ctx: Context, plan: Plan, have: StreamConfig, changes: FieldChange[], dryRun: boolean): Promise<void> {
  const update: Partial<StreamConfig> = {};
  for (const c of changes) (update as Record<string, unknown>)[c.field] = c.to;
  const asked = Math.max(update.max_bytes ?? have.max_bytes, 1);
  const own = Math.max(have.max_bytes, 0);
  const replicas = update.num_replicas ?? have.num_replicas;
  const tooLarge = async () => {
    const room = await measureRoom(ctx.jsm, { storage: ctx.storage, replicas, upToBytes: Math.max(asked - own, 1) });
    const variable = update.max_bytes !== undefined ? plan.vars.maxBytes : plan.vars.replicas;
    const value = update.max_bytes !== undefined ? update.max_bytes : update.num_replicas;
    return { room, error: new JetStreamStorageError(`${variable}=${String(value)} does not fit: ${describeRoom(ctx.storage, room + own)}`, asked, room + own, variable) };
  };
  if (update.max_bytes !== undefined && replicas === have.num_replicas && asked > own) {
    const { room, error } = await tooLarge();
    if (room < asked - own) throw error;
  }
  if (dryRun) return;
  try {
    await ctx.jsm.streams.update(plan.name, { ...have, ...update });
    ctx.logger?.info({ stream: plan.name, changes: describeChanges(changes) }, "changed stream settings");
  } catch (err) {
    if (!isNoRoomError(err)) throw err;
    throw (await tooLarge()).error;
  }
}

/** The settings of this process's configuration that differ from the stream's. Unset variables have no say. */
function diff(ctx: Context, plan: Plan, have: StreamConfig): FieldChange[] {
  const changes: FieldChange[] = [];
  const check = (field: FieldChange["field"], from: unknown, to: unknown, variable?: string) => {
    if (JSON.stringify(from) !== JSON.stringify(to)) changes.push({ field, from, to, ...(variable !== undefined ? { variable } : {}) });
  };
  // The contract's own settings: not configurable, but a stream made by hand may lack them.
  check("subjects", [...(have.subjects ?? [])].sort(), [plan.subject]);
  check("duplicate_window", have.duplicate_window, DUPLICATE_WINDOW_MS * NS_PER_MS);
  if (plan.configured.maxBytes !== undefined) check("max_bytes", have.max_bytes, plan.configured.maxBytes, plan.vars.maxBytes);
  if (plan.configured.maxAgeMs !== undefined) check("max_age", have.max_age, plan.configured.maxAgeMs * NS_PER_MS, plan.vars.maxAge);
  if (plan.replicasConfigured) check("num_replicas", have.num_replicas, plan.replicas, plan.configured.replicas !== undefined ? plan.vars.replicas : "CAMFLEET_REPLICAS");
  if (ctx.storageConfigured) check("storage", have.storage, ctx.storage, "CAMFLEET_STORAGE");
  return changes;
}

function creationFields(plan: Plan, config: Partial<StreamConfig>): FieldChange[] {
  return [
    { field: "max_bytes", from: undefined, to: config.max_bytes, variable: plan.vars.maxBytes },
    { field: "max_age", from: undefined, to: config.max_age, ...(plan.vars.maxAge !== undefined ? { variable: plan.vars.maxAge } : {}) },
    { field: "num_replicas", from: undefined, to: config.num_replicas },
    { field: "storage", from: undefined, to: config.storage },
  ];
}

function showValue(field: FieldChange["field"], value: unknown): string {
  if (value === undefined) return "-";
  if (field === "max_bytes" && typeof value === "number") return value < 0 ? "no limit" : formatBytes(value);
  if ((field === "max_age" || field === "duplicate_window") && typeof value === "number") return value === 0 ? "none" : formatDuration(value / NS_PER_MS);
  if (Array.isArray(value)) return value.join(",");
  return String(value);
}

/** 7d, 24h, 90s, 1500ms: the largest unit that divides the value. */
function formatDuration(ms: number): string {
  for (const [unit, size] of [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/**
 * Two nodes starting together may both try to add. The loser's add fails with
 * "name in use" or "subjects overlap"; `wonElsewhere` then says whether what we
 * wanted exists after all (another node's add), and only then is it success.
 */
async function addIgnoringRace(add: () => Promise<unknown>, wonElsewhere: () => Promise<boolean>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await add();
      return;
    } catch (err) {
      const raced = err instanceof JetStreamApiError && (err.code === STREAM_NAME_IN_USE || err.code === STREAM_SUBJECT_OVERLAP);
      // Many adds at once on 2.9 sometimes fail to create the store; the winner's may be there.
      const storeFailed = isStoreFailedError(err);
      if ((raced || storeFailed) && (await wonElsewhere())) return;
      if (!storeFailed || attempt >= STORE_FAILED_ATTEMPTS) throw err;
    }
  }
}

/** The stream exists and captures `subject`: what ensureJetStream wanted. */
async function streamHasSubject(jsm: JetStreamManager, name: string, subject: string): Promise<boolean> {
  return (await streamInfo(jsm, name))?.config.subjects?.includes(subject) ?? false;
}
