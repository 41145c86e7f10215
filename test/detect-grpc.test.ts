// The detector contract over real gRPC: the reference detector served by the
// proto/ server adapter, fed with real frames from FFmpeg (a moving test
// pattern, a still one, a JPEG), bad frames, the health service, and
// detectors that answer garbage.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";
import { describe, expect, onTestFinished, test } from "vitest";
import {
  DETECTOR_SERVICE_NAME,
  DetectorClient,
  DetectorError,
  MotionGate,
  PROTO_PATH,
  ReferenceDetector,
  serveDetector,
  type DetectorFrame,
  type DetectorService,
} from "../proto/index.ts";
import { rejection as rejectionOf } from "./helpers/rejection.ts";

const run = promisify(execFile);

/** Raw frames from FFmpeg's lavfi source `source` (e.g. testsrc=size=320x240:rate=10). */
async function ffmpegFrames(source: string, count: number, pixFmt: "gray" | "rgb24", width = 320, height = 240): Promise<DetectorFrame[]> {
  const { stdout } = await run("ffmpeg", ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source, "-frames:v", String(count), "-f", "rawvideo", "-pix_fmt", pixFmt, "pipe:1"], {
    encoding: "buffer",
    maxBuffer: 64 << 20,
  });
  const size = width * height * (pixFmt === "gray" ? 1 : 3);
  expect(stdout.length).toBe(size * count);
  return Array.from({ length: count }, (_, i) => ({ data: stdout.subarray(i * size, (i + 1) * size), width, height, format: pixFmt }));
}

async function served(impl: DetectorService = new ReferenceDetector()) {
  const server = await serveDetector(impl, { listen: "127.0.0.1:0" });
  onTestFinished(() => server.stop());
  const client = new DetectorClient({ endpoint: server.address });
  onTestFinished(() => client.close());
  return { server, client };
}

const call = (client: DetectorClient, frame: DetectorFrame, frameId: number, cameraId = "cam1", solutions = ["motion"]) =>
  client.detect({ frame, cameraId, frameId, captureTs: Date.now(), solutions }, { deadlineMs: 5000 });

const rejection = (p: Promise<unknown>) => rejectionOf(p, DetectorError);

describe("reference detector over gRPC", () => {
  test("a moving FFmpeg test pattern gives motion boxes inside the frame; a still one gives none, and the result is deterministic", async () => {
    const { client } = await served();
    expect(await client.listSolutions({ deadlineMs: 5000 })).toEqual({ solutions: ["motion"], model: "camfleet-motion/1" });

    const moving = await ffmpegFrames("testsrc=size=320x240:rate=10", 4, "gray");
    const first = await call(client, moving[0]!, 0);
    expect(first.detections).toEqual([]); // seeds the background
    const results = [];
    for (let i = 1; i < moving.length; i++) results.push(await call(client, moving[i]!, i));
    for (const r of results) {
      expect(r.model).toBe("camfleet-motion/1");
      expect(r.detections.length).toBeGreaterThan(0);
      for (const d of r.detections) {
        expect(d.label).toBe("motion");
        expect(d.score).toBeGreaterThan(0);
        expect(d.score).toBeLessThanOrEqual(1);
        expect(d.box.x + d.box.w).toBeLessThanOrEqual(1);
        expect(d.box.y + d.box.h).toBeLessThanOrEqual(1);
        expect(d.box.w * d.box.h).toBeGreaterThan(0);
      }
    }

    // Same frames, another camera id (its own background): the same boxes.
    await call(client, moving[0]!, 0, "cam2");
    const again = await call(client, moving[1]!, 1, "cam2");
    expect(again.detections).toEqual(results[0]!.detections);

    const still = await ffmpegFrames("smptebars=size=320x240:rate=10", 3, "rgb24");
    for (const [i, f] of still.entries()) expect((await call(client, f, i, "still")).detections).toEqual([]);
  });

  test("a JPEG from FFmpeg is decoded; its motion against a raw frame of the same scene is found", async () => {
    const { client } = await served();
    const { stdout: jpeg } = await run("ffmpeg", ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-ss", "1", "-frames:v", "1", "-f", "mjpeg", "pipe:1"], {
      encoding: "buffer",
    });
    const raw = await ffmpegFrames("testsrc=size=320x240:rate=10", 1, "gray");
    await call(client, raw[0]!, 0, "jpg");
    const r = await call(client, { data: jpeg, width: 0, height: 0, format: "jpeg" }, 1, "jpg");
    expect(r.detections.length).toBeGreaterThan(0);
    const wrongSize = await rejection(call(client, { data: jpeg, width: 640, height: 480, format: "jpeg" }, 2, "jpg"));
    expect(wrongSize.code).toBe("INVALID_ARGUMENT");
    expect(wrongSize.message).toMatch(/640x480.*320x240/);
  });

  test("bad frames are INVALID_ARGUMENT with a message naming the problem, and the detector keeps serving", async () => {
    const { client } = await served();
    const [frame] = await ffmpegFrames("testsrc=size=320x240:rate=10", 1, "gray");
    const short = await rejection(call(client, { ...frame!, data: frame!.data.subarray(1) }, 0));
    expect(short.code).toBe("INVALID_ARGUMENT");
    expect(short.message).toContain("76799 bytes, but a 320x240 gray frame has 76800");
    const garbageJpeg = await rejection(call(client, { data: Buffer.from("definitely not a jpeg"), width: 0, height: 0, format: "jpeg" }, 1));
    expect(garbageJpeg.code).toBe("INVALID_ARGUMENT");
    expect(garbageJpeg.message).toContain("not a decodable JPEG");
    const noSolutions = await rejection(call(client, frame!, 2, "cam1", []));
    expect(noSolutions.message).toContain("solutions is empty");
    const badCamera = await rejection(call(client, frame!, 2, "a.b"));
    expect(badCamera.message).toContain("camera_id");
    const unsupported = await rejection(call(client, frame!, 3, "cam1", ["person"]));
    expect(unsupported.code).toBe("UNIMPLEMENTED");
    // Still serving after all that.
    expect((await call(client, frame!, 4)).model).toBe("camfleet-motion/1");
  });

  test("the standard health service answers SERVING, and NOT_SERVING once set", async () => {
    const { server } = await served();
    const Health = grpc.makeGenericClientConstructor(healthService, "Health");
    const health = new Health(server.address, grpc.credentials.createInsecure());
    onTestFinished(() => health.close());
    const check = (svc: string) =>
      new Promise<string>((resolve, reject) =>
        (health as unknown as { Check: (req: unknown, cb: (err: Error | null, res: { status: string }) => void) => void }).Check({ service: svc }, (err, res) =>
          err ? reject(err) : resolve(res.status),
        ),
      );
    expect(await check(DETECTOR_SERVICE_NAME)).toBe("SERVING");
    server.setServing(false);
    expect(await check(DETECTOR_SERVICE_NAME)).toBe("NOT_SERVING");
  });

  test("a stopped detector is UNAVAILABLE at once; a slow one is DEADLINE_EXCEEDED within the deadline", async () => {
    const slow: DetectorService = {
      listSolutions: () => ({ solutions: ["motion"], model: "slow" }),
      detect: () => new Promise((resolve) => setTimeout(() => resolve({ detections: [], model: "slow" }), 3000)),
    };
    const { client, server } = await served(slow);
    const [frame] = await ffmpegFrames("testsrc=size=320x240:rate=10", 1, "gray");
    const started = Date.now();
    const late = await rejection(client.detect({ frame: frame!, cameraId: "c", frameId: 0, captureTs: 0, solutions: ["motion"] }, { deadlineMs: 200 }));
    expect(late.code).toBe("DEADLINE_EXCEEDED");
    expect(late.unavailable).toBe(true);
    expect(Date.now() - started).toBeLessThan(2500); // the 200 ms deadline, long before the 3000 ms answer
    await server.stop(0);
    const down = await rejection(call(client, frame!, 1));
    expect(down.code).toBe("UNAVAILABLE");
  });

  test("a detector answering out-of-contract values, or bytes that are no message, is BAD_RESPONSE naming the field", async () => {
    const liar: DetectorService = {
      listSolutions: () => ({ solutions: ["motion"], model: "liar" }),
      detect: (req) =>
        req.frameId === 0
          ? { detections: [{ label: "motion", score: 7, box: { x: 0.1, y: 0.1, w: 0.2, h: 0.2 } }], model: "liar" }
          : { detections: [{ label: "motion", score: 0.5, box: { x: 0.9, y: 0.1, w: 0.5, h: 0.2 } }], model: "liar" },
    };
    const { client } = await served(liar);
    const [frame] = await ffmpegFrames("testsrc=size=320x240:rate=10", 1, "gray");
    const score = await rejection(call(client, frame!, 0));
    expect(score.code).toBe("BAD_RESPONSE");
    expect(score.message).toContain("detections[0].score must be 0..1, got 7");
    expect((await rejection(call(client, frame!, 1))).message).toContain("detections[0].box reaches past the frame");

    // A server whose Detect answers random bytes: what a broken or foreign server sends.
    const def = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO_PATH, { keepCase: true })) as unknown as {
      camfleet: { detection: { v1: { Detector: grpc.ServiceClientConstructor } } };
    };
    const base = def.camfleet.detection.v1.Detector.service;
    const garbled: grpc.ServiceDefinition = { ...base, Detect: { ...base.Detect!, responseSerialize: () => Buffer.from([0xff, 0xff, 0xff, 0x07, 0x01]) } };
    const server = new grpc.Server();
    server.addService(garbled, {
      Detect: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
      ListSolutions: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { solutions: ["motion"] }),
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    onTestFinished(() => void server.forceShutdown());
    const garbledClient = new DetectorClient({ endpoint: `127.0.0.1:${port}` });
    onTestFinished(() => garbledClient.close());
    const garbage = await rejection(call(garbledClient, frame!, 0));
    expect(garbage.code).toBe("BAD_RESPONSE");
  });
});

describe("motion gate", () => {
  test("a square moving over FFmpeg's grey passes the gate on every frame, a still pattern does not (after the first frame)", async () => {
    const gate = new MotionGate();
    const moving = await ffmpegFrames("color=c=gray:s=320x240:r=5[bg];color=c=white:s=40x40:r=5[box];[bg][box]overlay=x=t*100:y=100", 5, "gray");
    const movingVerdicts = moving.map((f) => gate.check({ data: f.data, width: f.width, height: f.height }).motion);
    expect(movingVerdicts).toEqual([true, true, true, true, true]);
    gate.reset();
    const still = await ffmpegFrames("smptebars=size=320x240:rate=5", 5, "gray");
    expect(still.map((f) => gate.check({ data: f.data, width: f.width, height: f.height }).motion)).toEqual([true, false, false, false, false]);
  });
});
