import { assign, setup } from "xstate";
import { backoffDelay } from "../../runtime/index.ts";
import type { CameraError, CameraErrorCode, StreamInfo } from "../../subjects/index.ts";

/**
 * The camera's lifecycle as an xstate v5 machine. Pure: every effect (start
 * FFmpeg, stop it, open or close the WHIP session, publish a status edge) is
 * a named action the camera actor provides with `machine.provide(...)`, and
 * every timer is a delayed transition, so tests drive it with a simulated
 * clock and no process.
 *
 *   STOPPED ─START→ CONNECTING ─SOURCE_READY→ STREAMING ─SOURCE_FAILED / stall→ ERROR ─backoff→ CONNECTING
 *   STOP from any state → STOPPED
 *
 * Inside STREAMING two regions run side by side: `video` (the stall
 * watchdog, re-armed by each PROGRESS) and `publish` (off → starting → on,
 * with its own backoff when WHIP fails; ingest goes on meanwhile).
 */

export interface CameraTiming {
  /** First reconnect delay after an error, ms, before jitter. Default 500. */
  backoffBaseMs: number;
  /**
   * Longest reconnect delay, ms, before jitter. Default 2000: a source that
   * answers again is STREAMING within this plus the ~0.5 s FFmpeg needs to
   * start (the 3 s recovery target), while a dead source sees one connection
   * attempt every 1–2 s (equal jitter), spread out across a fleet.
   */
  backoffMaxMs: number;
  /** STREAMING this long resets the attempt count, ms. Default 60000. */
  resetAfterMs: number;
  /** No frame for this long while STREAMING → ERROR with STREAM_STALLED, ms. Default 5000. */
  stallTimeoutMs: number;
  /** Giving up on CONNECTING after this long → ERROR with SOURCE_UNREACHABLE, ms. Default 15000. */
  connectTimeoutMs: number;
}

export const DEFAULT_CAMERA_TIMING: CameraTiming = {
  backoffBaseMs: 500,
  backoffMaxMs: 2_000,
  resetAfterMs: 60_000,
  stallTimeoutMs: 5_000,
  connectTimeoutMs: 15_000,
};

export interface CameraMachineInput {
  timing: CameraTiming;
  /** Whether the camera should publish over WHIP right now (spec `always`, or viewers for `on-demand`). */
  publishWanted: boolean;
  /** Source of randomness for jitter; tests pass a fixed one. */
  random?: () => number;
}

export interface CameraMachineContext {
  timing: CameraTiming;
  random: () => number;
  /** Consecutive failures since the last stable streaming. */
  attempt: number;
  /** Delay before the next reconnect, ms. */
  retryInMs: number;
  error?: CameraError;
  stream?: StreamInfo;
  publishWanted: boolean;
  publishAttempt: number;
  publishRetryInMs: number;
  publishError?: CameraError;
}

export type CameraMachineEvent =
  | { type: "START" }
  | { type: "STOP" }
  /** The source settings changed: reconnect now, without a STOPPED edge. */
  | { type: "RESTART" }
  | { type: "SOURCE_READY"; stream: StreamInfo }
  /** FFmpeg reported progress: frames are arriving. */
  | { type: "PROGRESS" }
  | { type: "SOURCE_FAILED"; code: CameraErrorCode; detail: string }
  | { type: "PUBLISH_WANTED" }
  | { type: "PUBLISH_UNWANTED" }
  | { type: "WHIP_UP" }
  | { type: "WHIP_FAILED"; detail: string };

/**
 * The runtime's one backoff (exponential, equal jitter over [d/2, d]) with
 * the camera's base and cap, in whole ms: the delay goes into the status as
 * `retry_in_ms`.
 */
export function retryDelay(base: number, max: number, attempt: number, random: () => number): number {
  return Math.round(backoffDelay({ initialMs: base, maxMs: max }, attempt, random));
}

export const cameraMachine = setup({
  types: {
    context: {} as CameraMachineContext,
    events: {} as CameraMachineEvent,
    input: {} as CameraMachineInput,
  },
  actions: {
    // Effects, provided by the camera actor.
    startIngest: () => {},
    stopIngest: () => {},
    startPublish: () => {},
    stopPublish: () => {},
    /** A state edge: publish a StatusEvent. */
    reportEdge: () => {},
    failWith: assign(({ context }, params: { code: CameraErrorCode; detail: string }) => {
      const attempt = context.attempt + 1;
      const retryInMs = retryDelay(context.timing.backoffBaseMs, context.timing.backoffMaxMs, attempt, context.random);
      return { attempt, retryInMs, error: { code: params.code, detail: params.detail, attempt, retry_in_ms: retryInMs } };
    }),
    publishFailed: assign(({ context }, params: { detail: string }) => {
      const publishAttempt = context.publishAttempt + 1;
      const publishRetryInMs = retryDelay(context.timing.backoffBaseMs, context.timing.backoffMaxMs, publishAttempt, context.random);
      return {
        publishAttempt,
        publishRetryInMs,
        publishError: { code: "WHIP_FAILED" as const, detail: params.detail, attempt: publishAttempt, retry_in_ms: publishRetryInMs },
      };
    }),
  },
  guards: {
    publishWanted: ({ context }) => context.publishWanted,
  },
  delays: {
    retry: ({ context }) => context.retryInMs,
    publishRetry: ({ context }) => context.publishRetryInMs,
    stall: ({ context }) => context.timing.stallTimeoutMs,
    connectTimeout: ({ context }) => context.timing.connectTimeoutMs,
    resetAfter: ({ context }) => context.timing.resetAfterMs,
  },
}).createMachine({
  id: "camera",
  initial: "STOPPED",
  context: ({ input }) => ({
    timing: input.timing,
    random: input.random ?? Math.random,
    attempt: 0,
    retryInMs: 0,
    publishWanted: input.publishWanted,
    publishAttempt: 0,
    publishRetryInMs: 0,
  }),
  on: {
    STOP: { target: ".STOPPED" },
    PUBLISH_WANTED: { actions: assign({ publishWanted: true }) },
    PUBLISH_UNWANTED: { actions: assign({ publishWanted: false }) },
  },
  states: {
    STOPPED: {
      entry: ["stopIngest", assign({ attempt: 0, error: undefined, stream: undefined }), "reportEdge"],
      on: { START: { target: "CONNECTING" } },
    },
    CONNECTING: {
      entry: ["startIngest", "reportEdge"],
      after: {
        connectTimeout: {
          target: "ERROR",
          actions: { type: "failWith", params: ({ context }) => ({ code: "SOURCE_UNREACHABLE", detail: `no video within ${context.timing.connectTimeoutMs} ms` }) },
        },
      },
      on: {
        RESTART: { target: "CONNECTING", reenter: true, actions: ["stopIngest"] },
        SOURCE_READY: { target: "STREAMING", actions: assign({ stream: ({ event }) => event.stream }) },
        SOURCE_FAILED: { target: "ERROR", actions: { type: "failWith", params: ({ event }) => ({ code: event.code, detail: event.detail }) } },
      },
    },
    STREAMING: {
      type: "parallel",
      entry: [assign({ error: undefined }), "reportEdge"],
      exit: ["stopPublish"],
      after: {
        // Stable for long enough: the next failure starts the backoff from the beginning.
        resetAfter: { actions: assign({ attempt: 0 }) },
      },
      on: {
        RESTART: { target: "CONNECTING", actions: ["stopIngest"] },
        SOURCE_FAILED: { target: "ERROR", actions: { type: "failWith", params: ({ event }) => ({ code: event.code, detail: event.detail }) } },
      },
      states: {
        video: {
          initial: "watching",
          states: {
            watching: {
              after: {
                stall: {
                  target: "#camera.ERROR",
                  actions: { type: "failWith", params: ({ context }) => ({ code: "STREAM_STALLED", detail: `no frame for ${context.timing.stallTimeoutMs} ms` }) },
                },
              },
              // Each sign of life re-arms the watchdog.
              on: { PROGRESS: { target: "watching", reenter: true } },
            },
          },
        },
        publish: {
          initial: "deciding",
          states: {
            deciding: { always: [{ guard: "publishWanted", target: "starting" }, { target: "off" }] },
            off: {
              on: { PUBLISH_WANTED: { target: "starting", actions: assign({ publishWanted: true }) } },
            },
            starting: {
              entry: ["startPublish"],
              on: {
                WHIP_UP: { target: "on" },
                WHIP_FAILED: { target: "retrying", actions: { type: "publishFailed", params: ({ event }) => ({ detail: event.detail }) } },
                PUBLISH_UNWANTED: { target: "off", actions: [assign({ publishWanted: false }), "stopPublish"] },
              },
            },
            on: {
              entry: [assign({ publishAttempt: 0, publishError: undefined }), "reportEdge"],
              on: {
                WHIP_FAILED: { target: "retrying", actions: [{ type: "publishFailed", params: ({ event }) => ({ detail: event.detail }) }, "reportEdge"] },
                PUBLISH_UNWANTED: { target: "off", actions: [assign({ publishWanted: false }), "stopPublish", "reportEdge"] },
              },
            },
            retrying: {
              entry: ["stopPublish"],
              after: { publishRetry: { target: "deciding" } },
              on: { PUBLISH_UNWANTED: { target: "off", actions: assign({ publishWanted: false }) } },
            },
          },
        },
      },
    },
    ERROR: {
      entry: ["stopIngest", "reportEdge"],
      after: { retry: { target: "CONNECTING" } },
      on: { RESTART: { target: "CONNECTING" } },
    },
  },
});

/** The contract's state name of a snapshot (docs/contract.md). */
export function stateName(value: unknown): "STOPPED" | "CONNECTING" | "STREAMING" | "ERROR" {
  const top = typeof value === "string" ? value : Object.keys(value as object)[0];
  return top as "STOPPED" | "CONNECTING" | "STREAMING" | "ERROR";
}
