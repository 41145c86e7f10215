/** The wire contract of camfleet in code: names, schemas, error codes. Imports nothing of ours. */
export {
  CAMERA_ERROR_CODE_NAMES,
  CAMERA_ERROR_CODES,
  CamfleetError,
  CONTROL_ERROR_CODE_NAMES,
  CONTROL_ERROR_CODES,
  ensureCamfleetError,
  httpStatusOf,
} from "./errors.ts";
export type { CameraErrorCode, ControlErrorCode, ErrorCode } from "./errors.ts";
export { assertId, DEFAULT_SITE, DEFAULT_TENANT, ID_PATTERN, IdSchema, isValidId } from "./ids.ts";
export type { IdKind } from "./ids.ts";
export {
  BUCKETS,
  cameraIdOfControlSubject,
  CONTROL_QUEUE,
  detectionMsgId,
  kvKeys,
  MSG_ID_HEADER,
  parseEventSubject,
  PREFIX,
  STREAMS,
  subjects,
} from "./names.ts";
export type { EventKind, Scope } from "./names.ts";
export { redact, redactDeep } from "./redact.ts";
export {
  AiSettingsSchema,
  BoxSchema,
  CAMERA_STATES,
  CameraErrorSchema,
  CameraSpecPatchSchema,
  CameraSpecSchema,
  CameraStateSchema,
  CameraStatusSchema,
  control,
  DetectionEventSchema,
  DetectionSchema,
  describeIssues,
  ErrorBodySchema,
  ErrorReplySchema,
  http,
  isLocalSource,
  LeaseSchema,
  LOCAL_SCHEMES,
  NodeInfoSchema,
  parseOrThrow,
  redactSpec,
  RelaySchema,
  REMOTE_SCHEMES,
  schemeOf,
  StatusEventSchema,
  StreamInfoSchema,
} from "./schemas.ts";
export type {
  CameraError,
  CameraSpec,
  CameraSpecInput,
  CameraSpecPatch,
  CameraState,
  CameraStatus,
  ControlName,
  ControlReply,
  ControlRequest,
  Detection,
  DetectionEvent,
  ErrorReply,
  Lease,
  NodeInfo,
  Relay,
  StatusEvent,
  StreamInfo,
} from "./schemas.ts";
