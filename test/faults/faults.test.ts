// The fault-injection suite (issue #14 item 7), fast part: a 3-server NATS
// cluster, 3 camera nodes behind severable proxies, real RTSP cameras and the
// reference detector, under the whole fault schedule of
// test/helpers/faults/schedule.ts. After each fault it prints one line
// (recovery time, invariants held); at the end a table. One test, because the
// faults run one after another on the same fleet, as they would in the field.

import { describe, expect, it, onTestFinished } from "vitest";
import { stopEverything } from "../helpers/fleet.ts";
import { startRig } from "../helpers/faults/rig.ts";
import { ffmpegProcesses } from "../helpers/faults/invariants.ts";
import { newRunState, printReport, runFault, SCHEDULE, startFault } from "../helpers/faults/schedule.ts";
import { waitFor } from "../helpers/wait.ts";

describe("the fleet under the fault schedule", () => {
  it("keeps one owner per camera, recovers every camera, keeps detections unique and leaves no FFmpeg behind", async () => {
    const rig = await startRig({ onCleanup: onTestFinished });
    const state = newRunState();
    const start = await runFault(rig, state, startFault());
    expect(start.invariants.recovery, "the fleet never settled at the start").toEqual([]);
    for (const fault of SCHEDULE) await runFault(rig, state, fault);
    printReport(state.results);

    for (const r of state.results) {
      expect.soft(r.invariants, `fault ${r.index} ${r.name} (${r.detail})`).toEqual({ ownership: [], leases: [], recovery: [], detections: [], ffmpeg: [] });
    }

    const nodePids = rig.nodes.map((n) => n.pid);
    const leftover = await stopEverything(rig.nodes, [rig.cluster], rig.serverPids());
    expect(leftover).toEqual([]);
    // No FFmpeg outlives the fleet either.
    await waitFor(() => ffmpegProcesses(rig.rtsp.port, rig.cameras).length === 0, { timeoutMs: 5000, message: `no ffmpeg left (nodes ${nodePids.join(",")})` });
  }, 420_000);
});
