/** The detector contract (detection.proto) in domain types, its gRPC client and server adapter, and the reference detector. */
export { BOX_EDGE_SLACK, boxFromPixels, boxProblem, BYTES_PER_PIXEL, checkFrame, clampBox, DetectorError } from "./contract.ts";
export type {
  DetectBox,
  DetectedObject,
  DetectorErrorCode,
  DetectorFrame,
  DetectorService,
  DetectRequest,
  DetectResult,
  FrameFormat,
  SolutionList,
} from "./contract.ts";
export { DETECTOR_SERVICE_NAME, DetectorClient, PROTO_PATH, serveDetector } from "./grpc.ts";
export type { DetectorClientOptions, DetectorClientTls, DetectorServer, DetectorServerOptions, DetectorServerTls } from "./grpc.ts";
export { difference, downscale, MotionGate, regions, toGray } from "./motion.ts";
export type { FrameDiff, GateVerdict, GrayImage, MotionGateOptions, Region } from "./motion.ts";
export { MOTION_SOLUTION, REFERENCE_MODEL, ReferenceDetector } from "./reference-detector.ts";
export type { ReferenceDetectorOptions } from "./reference-detector.ts";
