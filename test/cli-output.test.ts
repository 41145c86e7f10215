// The pieces of the CLI's output that need no process: the pretty log format,
// the demo cameras' sources, the human event line.

import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { buildFfmpegArgs } from "../actors/camera/ingest.ts";
import { humanEvent } from "../cli/commands/cluster.ts";
import { DEMO_CAMERAS, DEMO_PEOPLE_CLIP } from "../cli/demo.ts";
import { createLogger, loadConfig, ConfigError } from "../runtime/index.ts";
import { CameraSpecSchema } from "../subjects/index.ts";

describe("LOG_FORMAT", () => {
  it("pretty: pino-pretty lines, credentials redacted as in JSON, no colours unless asked", () => {
    const lines: string[] = [];
    const destination = new Writable({ write: (c: Buffer, _e, done) => (lines.push(c.toString("utf8")), done()) });
    const log = createLogger({ node: "n1", destination, format: "pretty", colorize: false });
    log.info({ camera: "c1", url: "rtsp://admin:hunter2@10.0.0.5/live" }, "claimed camera");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: claimed camera \{"camera":"c1","url":"rtsp:\/\/[^"]*10\.0\.0\.5\/live"\}\n$/);
    expect(lines[0]).not.toContain("hunter2");
    expect(lines[0]).not.toContain("\x1b[");
  });

  it("is validated: auto, json or pretty", () => {
    expect(loadConfig({ LOG_FORMAT: "json" }, "node").logFormat).toBe("json");
    expect(loadConfig({}, "node").logFormat).toBe("auto");
    expect(() => loadConfig({ LOG_FORMAT: "fancy" }, "node")).toThrow(ConfigError);
    try {
      loadConfig({ LOG_FORMAT: "fancy" }, "node");
    } catch (err) {
      expect((err as ConfigError).problems.join("\n")).toMatch(/LOG_FORMAT.*auto, json, pretty/);
    }
  });
});

describe("demo cameras", () => {
  const opts = { rtpPort: 40_000, allowLocalSources: true };
  it("are valid specs: FFmpeg lavfi graphs, one analysed for motion, and the pedestrian clip the test set-up installs, analysed for people", () => {
    const graphs = DEMO_CAMERAS.filter((c) => c.url.startsWith("testsrc:")).map((c) => {
      const args = buildFfmpegArgs(CameraSpecSchema.parse(c), opts);
      return args[args.indexOf("lavfi") + 2]!;
    });
    expect(graphs[0]).toMatch(/^color=.*overlay=x=.*sin\(t/);
    expect(graphs[1]).toBe("testsrc=size=640x360:rate=15");
    expect(graphs[2]).toBe("smptebars=size=640x360:rate=10");
    expect(DEMO_CAMERAS.filter((c) => c.ai?.enabled === true).map((c) => [c.id, c.solutions])).toEqual([
      ["demo-moving", ["motion"]],
      ["demo-people", ["person_detection"]],
    ]);
    const people = buildFfmpegArgs(CameraSpecSchema.parse(DEMO_CAMERAS.find((c) => c.id === "demo-people")), opts);
    expect(people).toContain(`file:${DEMO_PEOPLE_CLIP}`);
  });

  it("an unknown testsrc pattern is refused before anything runs", () => {
    expect(() => buildFfmpegArgs(CameraSpecSchema.parse({ id: "x", url: "testsrc:?pattern=movie" }), opts)).toThrow(/pattern must be one of testsrc, bars, ball; got "movie"/);
  });
});

describe("events --human", () => {
  it("a status line with its error and retry, a detection line with its boxes", () => {
    const base = { camera: "door", tenant: "t", site: "s", node: "n1", epoch: 3, ts: Date.UTC(2026, 0, 1, 12, 0, 1, 250) };
    expect(
      humanEvent({ ...base, type: "status", state: "ERROR", trigger: "edge", error: { code: "SOURCE_UNREACHABLE", detail: "refused", attempt: 2, retry_in_ms: 4000 } }).replace(/\x1b\[[0-9;]*m/g, ""),
    ).toBe("12:00:01.250  status     door  ERROR  n1  epoch 3  SOURCE_UNREACHABLE: refused  attempt 2, retry in 4.0s");
    expect(
      humanEvent({
        ...base,
        type: "detection",
        id: "d1",
        frame_id: 17,
        frame_ts: base.ts,
        solutions: ["motion"],
        detections: [{ label: "motion", score: 0.91, box: { x: 0.1, y: 0.2, w: 0.3, h: 0.4 } }],
        latency: { inference_ms: 5, e2e_ms: 12.4 },
      }).replace(/\x1b\[[0-9;]*m/g, ""),
    ).toBe("12:00:01.250  detection  door  motion 0.91 [0.10,0.20 0.30x0.40]  frame 17  12 ms");
  });
});
