/** The detector contract (detection.proto) in domain types, its gRPC client and server adapter, and the reference detector. */
export { BOX_EDGE_SLACK, boxFromPixels, boxProblem, BYTES_PER_PIXEL, checkFrame, clampBox, DetectorError } from "./contract.ts";
export type {
  DetectBox,
  DetectedObject,
  DetectorErrorCode,
  DetectorFrame,
  DetectorService,
  DetectOptions,
  DetectRequest,
  DetectResult,
  FrameFormat,
  SolutionList,
} from "./contract.ts";
export { DETECTOR_SERVICE_NAME, DetectorClient, PROTO_PATH, serveDetector } from "./grpc.ts";
export type { DetectorClientOptions, DetectorClientTls, DetectorServer, DetectorServerOptions, DetectorServerTls } from "./grpc.ts";
export { difference, downscale, MotionGate, regions, toGray } from "./motion.ts";
export type { FrameDiff, GateVerdict, GrayImage, MotionGateOptions, Region } from "./motion.ts";
export { detectOptionsFor, OBJECT_MODEL, OBJECT_SOLUTION, OBJECT_SOLUTIONS, ObjectDetector, PERSON_SOLUTION } from "./object-detector.ts";
export type { ObjectDetectorOptions, ObjectQuery } from "./object-detector.ts";
export { MOTION_SOLUTION, REFERENCE_MODEL, ReferenceDetector } from "./reference-detector.ts";
export type { ReferenceDetectorOptions } from "./reference-detector.ts";
