// The box contract between detector and node (proto/contract.ts): the
// reference detector's boxes always pass the node's check, whatever the frame
// size and wherever the motion is. Regression: the README demo camera
// (testsrc 1280x720, analysed at 320x180, detector at 160x90) flapped
// "DETECTOR_FAILED: detections[1].box reaches past the frame" because x and w
// were each rounded to the nearest thousandth: 2/160 = 0.0125 → 0.013 and
// 158/160 = 0.9875 → 0.988, x + w = 1.001, past the node's limit once float32.

import fc from "fast-check";
import { describe, expect, onTestFinished, test } from "vitest";
import { BOX_EDGE_SLACK, boxFromPixels, boxProblem, clampBox, DetectorClient, ReferenceDetector, serveDetector, type DetectBox, type DetectRequest } from "../proto/index.ts";

/** What the wire does to a box: every field becomes a float32. */
const float32 = (b: DetectBox): DetectBox => ({ x: Math.fround(b.x), y: Math.fround(b.y), w: Math.fround(b.w), h: Math.fround(b.h) });

function request(data: Uint8Array, width: number, height: number, frameId: number): DetectRequest {
  return { frame: { data: Buffer.from(data), width, height, format: "gray" }, cameraId: "prop", frameId, captureTs: 0, solutions: ["motion"] };
}

/** A frame of one grey level with rectangles of another: [x0, y0, x1, y1) in pixels. */
function frameWith(width: number, height: number, background: number, rects: Array<[number, number, number, number, number]>): Uint8Array {
  const data = new Uint8Array(width * height).fill(background);
  for (const [x0, y0, x1, y1, v] of rects) for (let y = y0; y < y1; y++) data.fill(v, y * width + x0, y * width + x1);
  return data;
}

const rect = (width: number, height: number) =>
  fc
    .tuple(fc.integer({ min: 0, max: width - 1 }), fc.integer({ min: 0, max: height - 1 }), fc.integer({ min: 1, max: width }), fc.integer({ min: 1, max: height }), fc.integer({ min: 0, max: 255 }))
    .map(([x0, y0, w, h, v]): [number, number, number, number, number] => [x0, y0, Math.min(width, x0 + w), Math.min(height, y0 + h), v]);

describe("detector boxes and the node's check agree", () => {
  test("boxFromPixels: any pixel rectangle of any frame gives a box that covers it, ends on the frame and passes the node's check as float32", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4096 }).chain((width) => fc.integer({ min: 1, max: 4096 }).chain((height) => fc.tuple(fc.constant(width), fc.constant(height), rect(width, height)))),
        ([width, height, [x0, y0, x1, y1]]) => {
          const box = boxFromPixels(x0, y0, x1, y1, width, height);
          expect(box.x + box.w).toBeLessThanOrEqual(1);
          expect(box.y + box.h).toBeLessThanOrEqual(1);
          expect(box.x).toBeLessThanOrEqual(x0 / width);
          expect(box.x + box.w).toBeGreaterThanOrEqual(x1 / width - 1e-12);
          expect(box.y + box.h).toBeGreaterThanOrEqual(y1 / height - 1e-12);
          const wire = float32(box);
          expect(boxProblem(wire)).toBeUndefined();
          const kept = clampBox(wire);
          expect(kept.x + kept.w).toBeLessThanOrEqual(1);
          expect(kept.y + kept.h).toBeLessThanOrEqual(1);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test("the reference detector: random frame sizes and changes never give a box the node refuses", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .tuple(fc.integer({ min: 2, max: 400 }), fc.integer({ min: 2, max: 300 }))
          .chain(([width, height]) => fc.tuple(fc.constant(width), fc.constant(height), fc.integer({ min: 0, max: 255 }), fc.array(rect(width, height), { minLength: 1, maxLength: 4 }))),
        async ([width, height, background, rects]) => {
          const detector = new ReferenceDetector();
          await detector.detect(request(frameWith(width, height, background, []), width, height, 0));
          const result = await detector.detect(request(frameWith(width, height, background, rects), width, height, 1));
          for (const d of result.detections) {
            expect(d.box.x + d.box.w).toBeLessThanOrEqual(1);
            expect(d.box.y + d.box.h).toBeLessThanOrEqual(1);
            expect(boxProblem(float32(d.box))).toBeUndefined();
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test("regression, the demo camera's analysis size: motion from x = 2 px to the right edge at 160 px crosses gRPC intact", async () => {
    const server = await serveDetector(new ReferenceDetector(), { listen: "127.0.0.1:0" });
    onTestFinished(() => server.stop());
    const client = new DetectorClient({ endpoint: server.address });
    onTestFinished(() => client.close());
    // 320x180 is what the node sends for a 1280x720 camera; the detector works at 160x90.
    const [width, height] = [320, 180];
    await client.detect(request(frameWith(width, height, 20, []), width, height, 0), { deadlineMs: 5000 });
    const result = await client.detect(request(frameWith(width, height, 20, [[4, 4, 320, 180, 220]]), width, height, 1), { deadlineMs: 5000 });
    expect(result.detections).toHaveLength(1);
    const box = result.detections[0]!.box;
    // Rounded outwards: 2/160 = 0.0125 starts at 0.012 and the box ends exactly on the edge.
    expect(box).toMatchObject({ x: 0.012, w: 0.988 });
    expect(box.x + box.w).toBeLessThanOrEqual(1);
    expect(box.y + box.h).toBeLessThanOrEqual(1);
  });

  test("the node's check: past the slack is refused, within it is clamped onto the frame", () => {
    expect(boxProblem({ x: 0.5, y: 0, w: 0.5 + BOX_EDGE_SLACK * 2, h: 1 })).toContain("box reaches past the frame");
    expect(boxProblem({ x: 0, y: 0, w: 2, h: 1 })).toBe("box.w must be 0..1, got 2");
    expect(boxProblem({ x: 0, y: 0, w: Number.NaN, h: 1 })).toBe("box.w must be 0..1, got NaN");
    const kept = clampBox(float32({ x: 0.013, y: 0.5, w: 0.988, h: 0.5 }));
    expect(kept).toEqual({ x: 0.013, y: 0.5, w: 0.987, h: 0.5 });
  });
});
