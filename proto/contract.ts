/**
 * The detector contract in domain types: what the rest of camfleet sees of
 * proto/detection.proto. Plain interfaces, no generated or loaded types;
 * grpc.ts turns these into gRPC calls and back.
 */

/** Pixel formats a frame can have on the wire. Raw rows are top to bottom, without padding. */
export type FrameFormat = "gray" | "rgb24" | "jpeg";

export const BYTES_PER_PIXEL: Record<Exclude<FrameFormat, "jpeg">, number> = { gray: 1, rgb24: 3 };

export interface DetectorFrame {
  data: Buffer;
  /** Pixels; for JPEG 0 means "take it from the image". */
  width: number;
  height: number;
  format: FrameFormat;
}

export interface DetectRequest {
  frame: DetectorFrame;
  cameraId: string;
  /** Grows by one per sampled frame of the camera, from 0 at each start. */
  frameId: number;
  /** When the frame was captured, ms since the Unix epoch. */
  captureTs: number;
  /** Analyses wanted, e.g. ["motion"]. */
  solutions: string[];
  /** The camera's tuning of model solutions; unset = the server's defaults. */
  options?: DetectOptions;
}

/** A camera's ai.min_score, ai.labels and ai.nms_iou, as sent with each frame. */
export interface DetectOptions {
  /** Boxes scoring below this (0..1) are dropped. */
  minScore?: number;
  /** Classes object_detection reports; empty or unset = all. */
  labels?: string[];
  /** IoU (0..1) above which non-maximum suppression drops the weaker of two boxes. */
  nmsIou?: number;
}

/** Normalised to the frame: 0..1 from the top-left corner. */
export interface DetectBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface DetectedObject {
  label: string;
  /** 0..1. */
  score: number;
  box: DetectBox;
  /** The solution that produced it, when the server says. */
  solution?: string;
}

export interface DetectResult {
  detections: DetectedObject[];
  /** Name and version of the model. */
  model: string;
  /** Time the server spent, ms, when it measured it. */
  inferenceMs?: number;
  /** Share of the frame that changed, 0..1, when the server measures motion. */
  motionScore?: number;
}

export interface SolutionList {
  solutions: string[];
  model: string;
}

/** What a detector implementation provides; the gRPC server adapter serves one of these. */
export interface DetectorService {
  detect(request: DetectRequest): Promise<DetectResult> | DetectResult;
  listSolutions(): Promise<SolutionList> | SolutionList;
}

/**
 * Why a detector call failed, as a value:
 * - INVALID_ARGUMENT: the request (frame) is unusable; sending it again will not help.
 * - UNAVAILABLE: the detector cannot be reached (down, restarting, refused).
 * - DEADLINE_EXCEEDED: no answer within the call's deadline.
 * - UNIMPLEMENTED: no requested solution is offered.
 * - BAD_RESPONSE: the detector answered something that is not a valid result.
 * - FAILED: the detector reported an internal error, or something else went wrong.
 */
export type DetectorErrorCode = "INVALID_ARGUMENT" | "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "UNIMPLEMENTED" | "BAD_RESPONSE" | "FAILED";

export class DetectorError extends Error {
  override readonly name = "DetectorError";
  readonly code: DetectorErrorCode;

  constructor(code: DetectorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** True when the detector itself is away (down or too slow), not when it refused this frame. */
  get unavailable(): boolean {
    return this.code === "UNAVAILABLE" || this.code === "DEADLINE_EXCEEDED";
  }
}

/**
 * Checks a raw frame's size against its dimensions; throws INVALID_ARGUMENT
 * naming what is wrong. JPEG is checked when it is decoded.
 */
export function checkFrame(frame: DetectorFrame): void {
  const { width, height, format, data } = frame;
  if (data.length === 0) throw new DetectorError("INVALID_ARGUMENT", "frame.data is empty");
  if (format === "jpeg") return;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0 || width > 16_384 || height > 16_384) {
    throw new DetectorError("INVALID_ARGUMENT", `frame.width and frame.height must be 1 to 16384 for raw frames, got ${width}x${height}`);
  }
  const want = width * height * BYTES_PER_PIXEL[format];
  if (data.length !== want) {
    throw new DetectorError("INVALID_ARGUMENT", `frame.data has ${data.length} bytes, but a ${width}x${height} ${format} frame has ${want}`);
  }
}
