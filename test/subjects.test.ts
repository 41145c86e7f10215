import { describe, expect, it } from "vitest";
import {
  assertId,
  CameraSpecPatchSchema,
  CameraSpecSchema,
  CamfleetError,
  control,
  detectionMsgId,
  isValidId,
  parseEventSubject,
  parseOrThrow,
  redact,
  redactDeep,
  redactSpec,
  subjects,
} from "../subjects/index.ts";

describe("identifiers", () => {
  const good = ["cam1", "A", "a_b-c", "0", "x".repeat(64), "Front-Door_2"];
  const bad: Array<[string, unknown]> = [
    ["a dot", "a.b"],
    ["star", "*"],
    ["gt", ">"],
    ["embedded star", "cam*"],
    ["space", "a b"],
    ["empty", ""],
    ["65 characters", "x".repeat(65)],
    ["non-ASCII", "kamera-ü"],
    ["tab", "a\tb"],
    ["slash", "a/b"],
    ["not a string", 42],
    ["undefined", undefined],
  ];

  it.each(good)("accepts %j", (id) => {
    expect(isValidId(id)).toBe(true);
    expect(assertId("camera", id)).toBe(id);
  });

  it.each(bad)("rejects %s", (_name, id) => {
    expect(isValidId(id)).toBe(false);
    try {
      assertId("camera", id);
      expect.unreachable("assertId accepted a bad id");
    } catch (err) {
      expect(err).toBeInstanceOf(CamfleetError);
      expect((err as CamfleetError).code).toBe("INVALID_ARGUMENT");
      expect((err as CamfleetError).message).toMatch(/^camera id/);
    }
  });

  it("subject builders reject bad ids before anything reaches NATS", () => {
    expect(() => subjects.status("a.b")).toThrow(CamfleetError);
    expect(() => subjects.detections("cam", "ten ant")).toThrow(/tenant id/);
    expect(() => subjects.ctl.cameraStart(">")).toThrow(CamfleetError);
    expect(() => subjects.ctl.nodeDrain("")).toThrow(/node id/);
    expect(() => subjects.statusFilter({ site: "*" })).toThrow(/site id/);
  });
});

describe("subjects", () => {
  it("spells every subject of the contract (docs/contract.md)", () => {
    expect(subjects.status("cam1")).toBe("camfleet.status.default.default.cam1");
    expect(subjects.status("cam1", "acme", "hq")).toBe("camfleet.status.acme.hq.cam1");
    expect(subjects.detections("cam1", "acme", "hq")).toBe("camfleet.det.acme.hq.cam1");
    expect(subjects.ctl.camerasPut).toBe("camfleet.ctl.cameras.put");
    expect(subjects.ctl.camerasGet).toBe("camfleet.ctl.cameras.get");
    expect(subjects.ctl.camerasList).toBe("camfleet.ctl.cameras.list");
    expect(subjects.ctl.camerasDelete).toBe("camfleet.ctl.cameras.delete");
    expect(subjects.ctl.cameraStart("c")).toBe("camfleet.ctl.camera.c.start");
    expect(subjects.ctl.cameraStop("c")).toBe("camfleet.ctl.camera.c.stop");
    expect(subjects.ctl.cameraStatus("c")).toBe("camfleet.ctl.camera.c.status");
    expect(subjects.ctl.nodesList).toBe("camfleet.ctl.nodes.list");
    expect(subjects.ctl.nodeDrain("n1")).toBe("camfleet.ctl.node.n1.drain");
  });

  it("builds filters with wildcards for the parts left open", () => {
    expect(subjects.statusFilter()).toBe("camfleet.status.*.*.*");
    expect(subjects.detectionsFilter({ tenant: "acme", camera: "c1" })).toBe("camfleet.det.acme.*.c1");
  });

  it("parses event subjects back, and refuses others", () => {
    expect(parseEventSubject("camfleet.det.acme.hq.cam1")).toEqual({ kind: "det", tenant: "acme", site: "hq", camera: "cam1" });
    expect(parseEventSubject("camfleet.ctl.cameras.put")).toBeUndefined();
    expect(parseEventSubject("camfleet.status.a.b")).toBeUndefined();
  });

  it("derives one message id per camera, epoch and frame", () => {
    expect(detectionMsgId("cam1", 7, 42)).toBe("cam1:7:42");
    expect(detectionMsgId("cam1", 8, 42)).not.toBe(detectionMsgId("cam1", 7, 42));
  });
});

describe("CameraSpec", () => {
  it("fills the defaults of the contract (docs/contract.md)", () => {
    const spec = CameraSpecSchema.parse({ id: "cam1", url: "rtsp://10.0.0.5/stream" });
    expect(spec).toEqual({
      id: "cam1",
      url: "rtsp://10.0.0.5/stream",
      tenant: "default",
      site: "default",
      enabled: true,
      solutions: [],
      publish: "on-demand",
      rtsp_transport: "tcp",
      transcode: false,
      ai: { enabled: false, max_fps: 1, timeout_ms: 2000, motion_gate: true },
    });
  });

  it.each(["rtsp://h/s", "rtsps://h/s", "http://h/x.mjpg", "https://h/x", "srt://h:9000", "udp://239.0.0.1:1234", "file:/tmp/a.mp4", "testsrc:?size=1280x720&rate=25"])(
    "accepts the scheme of %s",
    (url) => {
      expect(CameraSpecSchema.safeParse({ id: "c", url }).success).toBe(true);
    },
  );

  it.each(["ftp://h/x", "javascript:alert(1)", "/tmp/a.mp4", "", "rtsp://"])("rejects %j with the field named", (url) => {
    expect(() => parseOrThrow(CameraSpecSchema, { id: "c", url }, "CameraSpec")).toThrow(/invalid CameraSpec: url:/);
  });

  it("names every bad field, and refuses unknown ones", () => {
    try {
      parseOrThrow(CameraSpecSchema, { id: "a.b", url: "rtsp://h/s", publish: "sometimes", ai: { max_fps: -1 }, colour: "red" }, "CameraSpec");
      expect.unreachable();
    } catch (err) {
      const e = err as CamfleetError;
      expect(e.code).toBe("INVALID_ARGUMENT");
      expect(e.message).toContain("id:");
      expect(e.message).toContain("publish:");
      expect(e.message).toContain("ai.max_fps:");
      expect(e.message).toMatch(/colour/);
    }
  });

  it("never echoes credentials in a validation message", () => {
    expect(() => parseOrThrow(CameraSpecSchema, { id: "c", url: "ftp://admin:hunter2@h/x" }, "CameraSpec")).toThrow(CamfleetError);
    try {
      parseOrThrow(CameraSpecSchema, { id: "c", url: "ftp://admin:hunter2@h/x" }, "CameraSpec");
    } catch (err) {
      expect(String((err as Error).message)).not.toContain("hunter2");
    }
  });

  it("a patch sets only what it names", () => {
    expect(CameraSpecPatchSchema.parse({ url: "rtsp://h/s" })).toEqual({ url: "rtsp://h/s" });
    expect(CameraSpecPatchSchema.parse({ ai: { enabled: true } })).toEqual({ ai: { enabled: true } });
    expect(CameraSpecPatchSchema.safeParse({ id: "x" }).success).toBe(false);
  });

  it("redactSpec hides URL credentials", () => {
    const spec = CameraSpecSchema.parse({ id: "c", url: "rtsp://admin:s3cret@10.0.0.5:554/live" });
    expect(redactSpec(spec).url).toBe("rtsp://***@10.0.0.5:554/live");
    expect(spec.url).toContain("s3cret");
  });
});

describe("control replies", () => {
  it("accept ok and error shapes and nothing in between", () => {
    const r = control.camerasDelete.reply;
    expect(r.safeParse({ ok: true }).success).toBe(true);
    expect(r.safeParse({ ok: false, error: { code: "NOT_FOUND", message: "no camera x" } }).success).toBe(true);
    expect(r.safeParse({ ok: false, error: { code: "WHATEVER", message: "" } }).success).toBe(false);
    expect(r.safeParse({ ok: false }).success).toBe(false);
  });

  it("drain replies carry the released count", () => {
    expect(control.nodeDrain.reply.parse({ ok: true, released: 3 })).toEqual({ ok: true, released: 3 });
  });
});

describe("redact", () => {
  it.each([
    ["rtsp://admin:pw@10.0.0.5/s", "rtsp://***@10.0.0.5/s"],
    ["rtsp://user@h/s", "rtsp://***@h/s"],
    ["rtsp://a:p@ss:w0rd@h:554/s", "rtsp://***@h:554/s"],
    ["see http://u:p@h/x and rtsps://x:y@z/w", "see http://***@h/x and rtsps://***@z/w"],
    ["https://h/x?token=abc&size=1", "https://h/x?token=***&size=1"],
    ["Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"],
    ["rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"],
    ["mail me at a@b.c", "mail me at a@b.c"],
    // Found in review: secrets outside user:pass@.
    ["srt://10.0.0.9:9000?mode=caller&passphrase=s3cretKey12&pbkeylen=16", "srt://10.0.0.9:9000?mode=caller&passphrase=***&pbkeylen=16"],
    ["srt://h:9000?streamid=#!::r=live/cam,m=request,s=abc123", "srt://h:9000?streamid=***"],
    ["https://cdn.example/live.m3u8?Expires=1&Signature=AbC&Key-Pair-Id=K", "https://cdn.example/live.m3u8?Expires=1&Signature=***&Key-Pair-Id=K"],
    ["https://h/x?sig=abc&password=p&Token=T", "https://h/x?sig=***&password=***&Token=***"],
    ["rtsp://admin:pa?ss#w@10.0.0.5/s", "rtsp://***@10.0.0.5/s"],
    ['{"url":"rtsp://u:p?w@h/s","note":"a@b"}', '{"url":"rtsp://***@h/s","note":"a@b"}'],
    ["rtsp://10.0.0.5/path?x=a@b", "rtsp://10.0.0.5/path?x=a@b"],
  ])("%s", (input, want) => {
    expect(redact(input)).toBe(want);
  });

  it("walks objects and arrays", () => {
    expect(redactDeep({ a: ["rtsp://u:p@h/s"], b: { c: "rtsp://u:p@h/s", n: 1 } })).toEqual({
      a: ["rtsp://***@h/s"],
      b: { c: "rtsp://***@h/s", n: 1 },
    });
  });
});
