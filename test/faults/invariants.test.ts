// The fault suite's judges on made-up logs: each must flag the violation it
// exists for, and pass a clean log. No processes.

import { describe, expect, it } from "vitest";
import type { StatusEvent } from "../../subjects/index.ts";
import { detectionEvent, statusEvent, type StoredDetection } from "../helpers/detections.ts";
import { DetectionJudge, detectionViolations, ffmpegViolations, LeaseHistory, leaseViolations, recoveryOf, type LeaseRevision } from "../helpers/faults/invariants.ts";

function historyOf(revs: Array<Omit<LeaseRevision, "camera" | "operation"> & { operation?: LeaseRevision["operation"] }>): LeaseHistory {
  const h = new LeaseHistory(64);
  h.byCamera.set("c", new Map(revs.map((r) => [r.revision, { camera: "c", operation: "PUT", ...r }])));
  return h;
}

const src = { camera: "c", tenant: "default", site: "default" };

function status(node: string, epoch: number, state: StatusEvent["state"], ts: number): StatusEvent {
  return { ...statusEvent(src), node, epoch, state, ts };
}

function stored(node: string, epoch: number, frame: number, seq: number, msgId?: string): StoredDetection {
  const event = { ...detectionEvent(src), node, epoch, frame_id: frame, id: `c-${epoch}-${frame}` };
  return { event, msgId: msgId ?? event.id, subject: "camfleet.det.default.default.c", seq };
}

describe("leaseViolations", () => {
  it("passes a claim, renewals, a release and a takeover with a higher epoch", () => {
    const h = historyOf([
      { revision: 10, node: "a", epoch: 0 },
      { revision: 11, node: "a", epoch: 10 },
      { revision: 15, node: "a", epoch: 10 },
      { revision: 20, node: "b", epoch: 0 },
      { revision: 21, node: "b", epoch: 20 },
      { revision: 30, operation: "DEL" },
    ]);
    expect(leaseViolations(h)).toEqual([]);
  });

  it("flags an epoch going back, a takeover without a higher epoch, and one epoch held by two nodes", () => {
    expect(leaseViolations(historyOf([{ revision: 11, node: "a", epoch: 10 }, { revision: 21, node: "a", epoch: 5 }]))).toHaveLength(1);
    const same = leaseViolations(historyOf([{ revision: 11, node: "a", epoch: 10 }, { revision: 21, node: "b", epoch: 10 }]));
    expect(same.join("\n")).toMatch(/held by both a and b/);
    expect(same.join("\n")).toMatch(/without a higher epoch/);
    expect(leaseViolations(historyOf([{ revision: 11, node: "a", epoch: 12 }]))).toHaveLength(1);
  });
});

describe("recoveryOf", () => {
  it("finds the final STREAMING run and whether it began after the fault", () => {
    const events = [status("a", 1, "STREAMING", 100), status("a", 1, "STREAMING", 200), status("b", 2, "CONNECTING", 300), status("b", 2, "STREAMING", 400), status("b", 2, "STREAMING", 500)];
    expect(recoveryOf(events, "c", 250)).toMatchObject({ node: "b", epoch: 2, streamingSince: 400, disturbed: true });
    expect(recoveryOf(events.slice(0, 2), "c", 150)).toMatchObject({ streamingSince: 100, disturbed: false });
    expect(recoveryOf(events.slice(0, 3), "c", 150)).toBeUndefined();
  });
});

describe("detectionViolations", () => {
  it("passes unique, growing frames, one epoch after another", () => {
    expect(detectionViolations([stored("a", 1, 0, 1), stored("a", 1, 3, 2), stored("b", 2, 0, 3)], (_c, e) => (e === 1 ? "a" : "b"))).toEqual([]);
  });

  it("says, without calling it a violation, that a frame was stored behind a newer one of its epoch", () => {
    const judge = new DetectionJudge();
    expect(judge.feed([stored("a", 1, 5, 1), stored("a", 1, 4, 2)])).toEqual([]);
    expect(judge.reordered.join("\n")).toMatch(/frame 4 stored after frame 5/);
  });

  it("flags a repeated id, an old epoch after a newer one, a wrong holder and a wrong Nats-Msg-Id", () => {
    expect(detectionViolations([stored("a", 1, 0, 1), stored("a", 1, 0, 2)]).join("\n")).toMatch(/stored twice/);
    expect(detectionViolations([stored("b", 2, 0, 1), stored("a", 1, 9, 2)]).join("\n")).toMatch(/after epoch 2 had begun/);
    expect(detectionViolations([stored("a", 1, 0, 1)], () => "b").join("\n")).toMatch(/belongs to b/);
    expect(detectionViolations([stored("a", 1, 0, 1, "other")]).join("\n")).toMatch(/Nats-Msg-Id other/);
  });
});

describe("ffmpegViolations", () => {
  const owners = new Map([["c", { node: "a", epoch: 1, revision: 2 }]]);
  const nodes = new Map([[100, "a"], [200, "b"]]);

  it("passes one FFmpeg per camera under its owner", () => {
    expect(ffmpegViolations([{ pid: 1, ppid: 100, camera: "c" }], nodes, owners)).toEqual([]);
  });

  it("flags an orphan, an FFmpeg on a node that does not own the camera, and two for one camera", () => {
    expect(ffmpegViolations([{ pid: 1, ppid: 1, camera: "c" }], nodes, owners).join("\n")).toMatch(/no live node/);
    expect(ffmpegViolations([{ pid: 1, ppid: 200, camera: "c" }], nodes, owners).join("\n")).toMatch(/owned by a/);
    expect(ffmpegViolations([{ pid: 1, ppid: 100, camera: "c" }, { pid: 2, ppid: 100, camera: "c" }], nodes, owners).join("\n")).toMatch(/2 ffmpeg processes/);
  });
});
