import jpeg from "jpeg-js";
import { boxFromPixels, BYTES_PER_PIXEL, DetectorError, type DetectorService, type DetectRequest, type DetectResult, type SolutionList } from "./contract.ts";
import { difference, downscale, regions, toGray, type GrayImage } from "./motion.ts";
import { OBJECT_MODEL, OBJECT_SOLUTIONS, type ObjectDetector } from "./object-detector.ts";

/**
 * The reference detector (`camfleet detector`): solution "motion". Per
 * camera it keeps a running-average background of the frames it was sent,
 * averaged down to ANALYSIS_WIDTH px wide; pixels that differ from it by
 * more than a threshold form 8-connected regions, and each region big enough
 * becomes a box labelled "motion", scored by how strongly it changed.
 * Deterministic: the same frames in the same order give the same boxes.
 *
 * The first frame of a camera (or the first after its size changed) only
 * seeds the background and gives no boxes. JPEG frames are decoded with
 * jpeg-js (pure JavaScript), raw gray and rgb24 are used as they are.
 *
 * With `objects` (an ObjectDetector) it also serves person_detection and
 * object_detection; a frame asking for motion and objects gets both.
 */

export const REFERENCE_MODEL = "camfleet-motion/1";
export const MOTION_SOLUTION = "motion";

export interface ReferenceDetectorOptions {
  /** Width the background model works at, px. Default 160. */
  analysisWidth?: number;
  /** Weight of the newest frame in the background, 0..1 (1 = plain difference with the previous frame). Default 0.5. */
  alpha?: number;
  /** Grey-level difference (0..255) above which a pixel changed. Default 10. */
  threshold?: number;
  /** Smallest region reported, as a share of the analysed frame. Default 0.001 (at least 2 px). */
  minRegion?: number;
  /** Boxes per frame at most, largest first. Default 16. */
  maxBoxes?: number;
  /** Cameras whose background is kept at once; the least recently seen is forgotten. Default 4096. */
  maxCameras?: number;
  /** Largest JPEG accepted, megapixels. Default 40. */
  maxJpegMegapixels?: number;
  /** The pretrained model behind person_detection and object_detection; unset = motion only. */
  objects?: ObjectDetector;
}

interface CameraModel {
  background: Float32Array;
  width: number;
  height: number;
}

export class ReferenceDetector implements DetectorService {
  readonly #opts: Required<Omit<ReferenceDetectorOptions, "objects">>;
  readonly #objects: ObjectDetector | undefined;
  /** Map order is recency: a camera seen is moved to the end. */
  readonly #models = new Map<string, CameraModel>();

  constructor(options: ReferenceDetectorOptions = {}) {
    this.#opts = {
      analysisWidth: 160,
      alpha: 0.5,
      threshold: 10,
      minRegion: 0.001,
      maxBoxes: 16,
      maxCameras: 4096,
      maxJpegMegapixels: 40,
      ...options,
    };
    this.#objects = options.objects;
    const a = this.#opts.alpha;
    if (!(a > 0 && a <= 1)) throw new RangeError(`ReferenceDetectorOptions.alpha must be in (0, 1], got ${a}`);
  }

  listSolutions(): SolutionList {
    if (this.#objects === undefined) return { solutions: [MOTION_SOLUTION], model: REFERENCE_MODEL };
    return { solutions: [MOTION_SOLUTION, ...OBJECT_SOLUTIONS], model: `${REFERENCE_MODEL}+${OBJECT_MODEL}` };
  }

  detect(request: DetectRequest): DetectResult | Promise<DetectResult> {
    const objects = this.#objects;
    const wantObjects = objects === undefined ? [] : request.solutions.filter((s) => OBJECT_SOLUTIONS.includes(s));
    const wantMotion = request.solutions.includes(MOTION_SOLUTION);
    if (!wantMotion && wantObjects.length === 0) {
      const offered = this.listSolutions().solutions.map((s) => `"${s}"`).join(", ");
      throw new DetectorError("UNIMPLEMENTED", `this detector offers ${offered}; asked for ${request.solutions.join(", ")}`);
    }
    if (objects === undefined || wantObjects.length === 0) return this.#motion(request);
    return this.#withObjects(objects, request, wantObjects, wantMotion);
  }

  /** The model's boxes (in its thread), plus motion's when asked for too. */
  async #withObjects(objects: ObjectDetector, request: DetectRequest, solutions: string[], wantMotion: boolean): Promise<DetectResult> {
    const started = performance.now();
    // Motion first and synchronously: its background must see frames in the order they came.
    const motion = wantMotion ? this.#motion(request) : undefined;
    const o = request.options;
    const found = await objects.detect(request, solutions, {
      ...(o?.minScore !== undefined ? { minScore: o.minScore } : {}),
      ...(o?.nmsIou !== undefined ? { iou: o.nmsIou } : {}),
      ...(o?.labels !== undefined ? { labels: o.labels } : {}),
    });
    return {
      detections: [...found, ...(motion?.detections ?? [])],
      model: motion !== undefined ? `${REFERENCE_MODEL}+${OBJECT_MODEL}` : OBJECT_MODEL,
      ...(motion?.motionScore !== undefined ? { motionScore: motion.motionScore } : {}),
      inferenceMs: performance.now() - started,
    };
  }

  #motion(request: DetectRequest): DetectResult {
    const started = performance.now();
    const gray = this.#gray(request);
    const small = downscale(gray, this.#opts.analysisWidth);
    const model = this.#models.get(request.cameraId);
    this.#models.delete(request.cameraId);
    if (model === undefined || model.width !== small.width || model.height !== small.height) {
      this.#remember(request.cameraId, { background: small.data as Float32Array, width: small.width, height: small.height });
      return { detections: [], model: REFERENCE_MODEL, motionScore: 0, inferenceMs: performance.now() - started };
    }
    const bg: GrayImage = { data: model.background, width: model.width, height: model.height };
    const d = difference(small, bg, this.#opts.threshold);
    const minPixels = Math.max(2, Math.round(this.#opts.minRegion * small.width * small.height));
    const found = regions(d, minPixels, this.#opts.maxBoxes);
    // Blend the new frame in after comparing: a scene that stays changed fades into the background.
    const a = this.#opts.alpha;
    const cur = small.data;
    for (let i = 0; i < model.background.length; i++) model.background[i] = model.background[i]! * (1 - a) + cur[i]! * a;
    this.#remember(request.cameraId, model);
    return {
      detections: found.map((r) => ({
        label: "motion",
        score: round(Math.min(1, r.meanDiff / 128)),
        // Edges rounded outwards from the pixels, never past the frame: rounding x and w
        // each to the nearest could make x + w = 1.001, which the node refuses.
        box: boxFromPixels(r.px.x0, r.px.y0, r.px.x1, r.px.y1, small.width, small.height),
        solution: MOTION_SOLUTION,
      })),
      model: REFERENCE_MODEL,
      motionScore: round(d.changed),
      inferenceMs: performance.now() - started,
    };
  }

  /** Forgets a camera's background, e.g. when its stream restarts. */
  forget(cameraId: string): void {
    this.#models.delete(cameraId);
  }

  #remember(cameraId: string, model: CameraModel): void {
    this.#models.set(cameraId, model);
    if (this.#models.size > this.#opts.maxCameras) {
      const oldest = this.#models.keys().next().value;
      if (oldest !== undefined) this.#models.delete(oldest);
    }
  }

  #gray(request: DetectRequest): GrayImage {
    const f = request.frame;
    if (f.format !== "jpeg") return toGray(f.data, f.width, f.height, BYTES_PER_PIXEL[f.format] as 1 | 3);
    let image: { width: number; height: number; data: Uint8Array };
    try {
      image = jpeg.decode(f.data, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: this.#opts.maxJpegMegapixels, maxMemoryUsageInMB: 512 });
    } catch (err) {
      throw new DetectorError("INVALID_ARGUMENT", `frame.data is not a decodable JPEG: ${err instanceof Error ? err.message : String(err)}`);
    }
    if ((f.width !== 0 && f.width !== image.width) || (f.height !== 0 && f.height !== image.height)) {
      throw new DetectorError("INVALID_ARGUMENT", `frame says ${f.width}x${f.height}, but the JPEG is ${image.width}x${image.height}`);
    }
    return toGray(image.data, image.width, image.height, 4);
  }
}

/** Three decimals: stable numbers in events, no float noise. */
function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}
