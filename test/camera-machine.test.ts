import { describe, expect, it } from "vitest";
import { createActor, SimulatedClock } from "xstate";
import { cameraMachine, DEFAULT_CAMERA_TIMING, retryDelay, stateName, type CameraTiming } from "../actors/camera/machine.ts";

const STREAM = { codec: "h264", width: 1280, height: 720, fps: 25 };
const timing: CameraTiming = { ...DEFAULT_CAMERA_TIMING, backoffBaseMs: 1000, backoffMaxMs: 8000, resetAfterMs: 20_000, stallTimeoutMs: 5000, connectTimeoutMs: 10_000 };

/** A camera machine on a simulated clock, recording every effect it asks for. */
function camera(publishWanted = false) {
  const clock = new SimulatedClock();
  const effects: string[] = [];
  const machine = cameraMachine.provide({
    actions: {
      startIngest: () => void effects.push("startIngest"),
      stopIngest: () => void effects.push("stopIngest"),
      startPublish: () => void effects.push("startPublish"),
      stopPublish: () => void effects.push("stopPublish"),
      reportEdge: ({ context }) => void effects.push(`edge:${context.error?.code ?? "-"}`),
    },
  });
  // random() = 1: the upper end of the jitter, so delays are exact.
  const actor = createActor(machine, { clock, input: { timing, publishWanted, random: () => 1 } }).start();
  return {
    actor,
    clock,
    effects,
    state: () => stateName(actor.getSnapshot().value),
    publish: () => (actor.getSnapshot().value as { STREAMING?: { publish?: string } }).STREAMING?.publish,
    ctx: () => actor.getSnapshot().context,
  };
}

describe("camera machine", () => {
  it("STOPPED → CONNECTING → STREAMING, starting ingest once", () => {
    const c = camera();
    expect(c.state()).toBe("STOPPED");
    c.actor.send({ type: "START" });
    expect(c.state()).toBe("CONNECTING");
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    expect(c.state()).toBe("STREAMING");
    expect(c.ctx().stream).toEqual(STREAM);
    expect(c.effects.filter((e) => e === "startIngest")).toHaveLength(1);
  });

  it("a source failure goes to ERROR, then back to CONNECTING after an exponential backoff", () => {
    const c = camera();
    c.actor.send({ type: "START" });
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 5; attempt++) {
      c.actor.send({ type: "SOURCE_FAILED", code: "SOURCE_UNREACHABLE", detail: "connection refused" });
      expect(c.state()).toBe("ERROR");
      expect(c.ctx().error).toMatchObject({ code: "SOURCE_UNREACHABLE", attempt });
      delays.push(c.ctx().retryInMs);
      c.clock.increment(c.ctx().retryInMs - 1);
      expect(c.state()).toBe("ERROR");
      c.clock.increment(1);
      expect(c.state()).toBe("CONNECTING");
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 8000]);
    expect(c.effects.filter((e) => e === "stopIngest").length).toBeGreaterThanOrEqual(5);
  });

  it("jitter keeps each delay within [d/2, d]", () => {
    for (let attempt = 1; attempt < 8; attempt++) {
      const d = Math.min(8000, 1000 * 2 ** (attempt - 1));
      expect(retryDelay(1000, 8000, attempt, () => 0)).toBe(d / 2);
      expect(retryDelay(1000, 8000, attempt, () => 0.5)).toBe(0.75 * d);
    }
  });

  it("no frames for the stall timeout → ERROR with STREAM_STALLED; progress re-arms the watchdog", () => {
    const c = camera();
    c.actor.send({ type: "START" });
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    for (let i = 0; i < 10; i++) {
      c.clock.increment(4000);
      c.actor.send({ type: "PROGRESS" });
    }
    expect(c.state()).toBe("STREAMING");
    c.clock.increment(4999);
    expect(c.state()).toBe("STREAMING");
    c.clock.increment(1);
    expect(c.state()).toBe("ERROR");
    expect(c.ctx().error?.code).toBe("STREAM_STALLED");
  });

  it("CONNECTING that never sees video times out as SOURCE_UNREACHABLE", () => {
    const c = camera();
    c.actor.send({ type: "START" });
    c.clock.increment(10_000);
    expect(c.state()).toBe("ERROR");
    expect(c.ctx().error?.code).toBe("SOURCE_UNREACHABLE");
  });

  it("stable streaming resets the backoff", () => {
    const c = camera();
    c.actor.send({ type: "START" });
    for (let i = 0; i < 3; i++) {
      c.actor.send({ type: "SOURCE_FAILED", code: "FFMPEG_EXITED", detail: "x" });
      c.clock.increment(c.ctx().retryInMs);
    }
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    expect(c.ctx().attempt).toBe(3);
    for (let t = 0; t < 20_000; t += 4000) {
      c.clock.increment(4000);
      c.actor.send({ type: "PROGRESS" });
    }
    expect(c.ctx().attempt).toBe(0);
    c.actor.send({ type: "SOURCE_FAILED", code: "FFMPEG_EXITED", detail: "x" });
    expect(c.ctx().retryInMs).toBe(1000);
  });

  it.each(["CONNECTING", "STREAMING", "ERROR"])("STOP from %s → STOPPED, ingest stopped, no timer left to fire", (from) => {
    const c = camera(true);
    c.actor.send({ type: "START" });
    if (from !== "CONNECTING") c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    if (from === "ERROR") c.actor.send({ type: "SOURCE_FAILED", code: "SOURCE_AUTH", detail: "401" });
    expect(c.state()).toBe(from);
    c.effects.length = 0;
    c.actor.send({ type: "STOP" });
    expect(c.state()).toBe("STOPPED");
    expect(c.effects).toContain("stopIngest");
    if (from === "STREAMING") expect(c.effects).toContain("stopPublish");
    c.clock.increment(120_000);
    expect(c.state()).toBe("STOPPED");
    expect(c.ctx().error).toBeUndefined();
  });

  it("publishing: on demand inside STREAMING; a WHIP failure retries with backoff and never stops video", () => {
    const c = camera(false);
    c.actor.send({ type: "START" });
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    expect(c.publish()).toBe("off");
    c.actor.send({ type: "PUBLISH_WANTED" });
    expect(c.publish()).toBe("starting");
    c.actor.send({ type: "WHIP_FAILED", detail: "HTTP 500" });
    expect(c.publish()).toBe("retrying");
    expect(c.ctx().publishError).toMatchObject({ code: "WHIP_FAILED", attempt: 1, retry_in_ms: 1000 });
    c.actor.send({ type: "PROGRESS" });
    c.clock.increment(1000);
    expect(c.publish()).toBe("starting");
    c.actor.send({ type: "WHIP_UP" });
    expect(c.publish()).toBe("on");
    expect(c.state()).toBe("STREAMING");
    expect(c.ctx().publishError).toBeUndefined();
    c.actor.send({ type: "PUBLISH_UNWANTED" });
    expect(c.publish()).toBe("off");
    expect(c.effects.filter((e) => e === "startPublish")).toHaveLength(2);
  });

  it("RESTART reconnects at once from any running state, and does nothing when STOPPED", () => {
    const c = camera();
    c.actor.send({ type: "RESTART" });
    expect(c.state()).toBe("STOPPED");
    c.actor.send({ type: "START" });
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    c.effects.length = 0;
    c.actor.send({ type: "RESTART" });
    expect(c.state()).toBe("CONNECTING");
    expect(c.effects).toEqual(["stopPublish", "stopIngest", "startIngest", "edge:-"]);
    c.actor.send({ type: "SOURCE_FAILED", code: "SOURCE_UNREACHABLE", detail: "x" });
    c.actor.send({ type: "RESTART" });
    expect(c.state()).toBe("CONNECTING");
  });

  it("publishing `always` starts with STREAMING and resumes after a reconnect", () => {
    const c = camera(true);
    c.actor.send({ type: "START" });
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    expect(c.publish()).toBe("starting");
    c.actor.send({ type: "WHIP_UP" });
    c.actor.send({ type: "SOURCE_FAILED", code: "FFMPEG_EXITED", detail: "exit 1" });
    expect(c.effects.at(-2)).toBe("stopIngest");
    c.clock.increment(c.ctx().retryInMs);
    c.actor.send({ type: "SOURCE_READY", stream: STREAM });
    expect(c.publish()).toBe("starting");
  });
});
