// How much room the JetStream store has left for a new stream.
//
// Why probing. nats-server 2.9 reserves a stream's `max_bytes` (times its
// replicas) against the server's store limit (`max_file_store` or
// `max_memory_store`) and refuses a stream that asks for more than is left:
// "insufficient storage resources available" (10047; 10028 for memory;
// 10005 "no suitable peers for placement, insufficient storage" in a cluster,
// where the meta leader places replicas on servers with room). A client
// cannot read that limit, nor the reservations:
// - account info (`$JS.API.INFO`) gives the ACCOUNT's limits. An account
//   without limits of its own (the default, and what `jetstream {}` gives)
//   reports -1 for max_storage and max_memory (seen on 2.9.10), and its
//   `storage` is bytes used, not bytes reserved;
// - the server's own limit and its reservations are on the monitoring port
//   (`/jsz`: config.max_storage, reserved_storage), which clients often cannot
//   reach, or in `$SYS` requests, which need the system account.
// So the server is asked the one question that answers it exactly, with the
// server's own check, for every kind of set-up (single server, cluster,
// account limits, tiers): a throwaway stream with the size in question is
// created (it fits) or refused (it does not), and deleted at once. A binary
// search finds the room to ~1.5 %. It runs only when a stream is about to be
// created or changed, never while camfleet is running.
//
// Nothing is ever published to a probe; its subject (`camfleet.probe.<id>`)
// and name (`CAMFLEET_PROBE_<id>`) are its own, so it cannot capture events.

import { randomBytes } from "node:crypto";
import { JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import { STREAMS, subjects } from "../../subjects/index.ts";

export type StorageKind = "file" | "memory";

/** JetStream API error codes meaning "this does not fit the store" (the client library names none of them). */
export const NO_ROOM_CODES = new Set([
  10047, // JSStorageResourcesExceededErr: insufficient storage resources available
  10028, // JSMemoryResourcesExceededErr: insufficient memory resources available
  10023, // JSInsufficientResourcesErr: insufficient resources
  10005, // JSClusterNoPeersErrF: no suitable peers for placement (in a cluster: not enough room on enough servers)
]);

/**
 * JSStreamCreateErrF, which nats-server 2.9 answers as "error creating store
 * for stream" when the store could not be made: seen with six nodes starting
 * together on one server, two of them adding the same stream (or a probe) at
 * once. Nothing was created; asking again works. (Other create failures share
 * the code: they fail again, and the last answer is thrown.)
 */
export const STREAM_STORE_FAILED = 10049;
/** Tries of one add that fails with STREAM_STORE_FAILED. */
export const STORE_FAILED_ATTEMPTS = 3;

export function isStoreFailedError(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === STREAM_STORE_FAILED;
}

export function isNoRoomError(err: unknown): err is JetStreamApiError {
  return err instanceof JetStreamApiError && NO_ROOM_CODES.has(err.code);
}

/**
 * A stream or bucket does not fit the JetStream store. The message is one line,
 * meant for the operator as it is: what was asked (naming the variable when
 * a variable asked it), and how much room there is.
 */
export class JetStreamStorageError extends Error {
  override readonly name = "JetStreamStorageError";
  constructor(
    message: string,
    /** Bytes asked for (one replica). */
    readonly askedBytes: number,
    /** Bytes the store had free for it when measured (one replica). */
    readonly freeBytes: number,
    /** The configuration variable that asked, if one did. */
    readonly variable?: string,
  ) {
    super(message);
  }
}

/** "the JetStream store has 1.6 GiB free", for the storage kind in use. */
export function describeRoom(kind: StorageKind, freeBytes: number): string {
  return `the JetStream ${kind === "memory" ? "memory store" : "store"} has ${formatBytes(freeBytes)} free`;
}

/** Bytes in binary units with one decimal below 10: 0 B, 512 B, 1.6 GiB, 819 MiB. */
export function formatBytes(bytes: number): string {
  if (bytes < 0) return "no limit";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  // Rounded down: "free" must never be overstated.
  const shown = value < 10 ? Math.floor(value * 10) / 10 : Math.floor(value);
  return `${shown} ${units[unit]}`;
}

export interface ProbeOptions {
  storage: StorageKind;
  replicas: number;
  /** Stop searching above this: the caller needs to know only whether at least this much is free. */
  upToBytes: number;
}

/** The search asks whole MiB: finer does not change a decision, and the answer reads exactly ("2 GiB"). */
const STEP_BYTES = 1024 * 1024;

/**
 * Bytes (per replica) a new stream of this storage kind and replica count
 * could ask for now, at most `upToBytes`: exactly `upToBytes` means "at least
 * that much". Otherwise a whole number of MiB, found by binary search (about
 * 13 probes for 5 GiB). Failures other than "no room" are thrown as they are.
 *
 * Probes that fit are held until the answer is known and each next probe asks
 * only for what comes on top of them: room is only ever taken during the
 * search, never given back. That matters in a cluster, where the meta leader
 * learns of room freed by a deleted stream only some time later (a search that
 * deleted each probe at once measured 174 MiB of a 256 MiB store there), while
 * it counts the room it hands out at once. On a cluster larger than the
 * replica count, held probes may sit on different servers and the answer can
 * be too high; creating the real stream then fails and sizes it again.
 */
export async function measureRoom(jsm: JetStreamManager, options: ProbeOptions): Promise<number> {
  if (options.upToBytes <= 0) return 0;
  const held: string[] = [];
  const fits = async (bytes: number) => {
    const name = await probe(jsm, bytes, options);
    if (name !== undefined) held.push(name);
    return name !== undefined;
  };
  try {
    if (await fits(options.upToBytes)) return options.upToBytes;
    let lo = 0; // MiB known to fit, all held (0: nothing)
    let hi = Math.ceil(options.upToBytes / STEP_BYTES); // MiB known not to fit
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (await fits((mid - lo) * STEP_BYTES)) lo = mid;
      else hi = mid;
    }
    return lo * STEP_BYTES;
  } finally {
    await releaseProbes(jsm, held);
  }
}

/** Creates a probe stream of this size: its name when it fits, undefined when the store has no room for it. */
async function probe(jsm: JetStreamManager, bytes: number, options: ProbeOptions): Promise<string | undefined> {
  const token = randomBytes(8).toString("hex");
  const name = `${STREAMS.probePrefix}${token}`;
  for (let attempt = 1; ; attempt++) {
    try {
      await jsm.streams.add({
        name,
        subjects: [subjects.probe(token)],
        max_bytes: bytes,
        num_replicas: options.replicas,
        storage: options.storage,
      });
      return name;
    } catch (err) {
      if (isNoRoomError(err)) return undefined;
      if (!isStoreFailedError(err) || attempt >= STORE_FAILED_ATTEMPTS) throw err;
    }
  }
}

/**
 * Probe reservations must not outlive the question. A delete that fails
 * leaves an empty stream holding room, so say which, rather than hide it.
 */
async function releaseProbes(jsm: JetStreamManager, names: string[]): Promise<void> {
  const failed: Array<{ name: string; err: unknown }> = [];
  for (const name of names) {
    try {
      await jsm.streams.delete(name);
    } catch (err) {
      failed.push({ name, err });
    }
  }
  if (failed.length > 0) {
    throw new Error(`could not delete the room probe stream(s) ${failed.map((f) => f.name).join(", ")}; delete them by hand (nats stream rm <name>)`, { cause: failed[0]!.err });
  }
}
