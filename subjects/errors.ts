/**
 * One registry of error codes, shared by NATS control replies, HTTP responses,
 * status events and logs. Adding a code means adding it here, with its
 * meaning and HTTP status; a test checks every code is documented in README.
 */

/** Codes a control request or an HTTP call can fail with. */
export const CONTROL_ERROR_CODES = {
  INVALID_ARGUMENT: { http: 400, doc: "The request is malformed: a bad id, spec or field. Nothing was changed." },
  UNAUTHENTICATED: { http: 401, doc: "The HTTP API token is missing or wrong, or NATS refused the credentials (authorization violation)." },
  PERMISSION_DENIED: { http: 403, doc: "The NATS user may not publish or subscribe to a subject the request needs (a NATS permissions violation); the message names the subject." },
  NOT_FOUND: { http: 404, doc: "No such camera, node or session." },
  CONFLICT: { http: 409, doc: "The request lost a compare-and-set race or contradicts the current state; retry after re-reading." },
  PRECONDITION_FAILED: { http: 412, doc: "The resource changed since the revision the request names (HTTP If-Match); re-read it and retry." },
  PAYLOAD_TOO_LARGE: { http: 413, doc: "The request body is larger than the route accepts, or a reply would exceed NATS max_payload (a snapshot: ask for a smaller width)." },
  UNSUPPORTED_MEDIA: { http: 406, doc: "The SDP offer has no codec this side can accept (H.264 for video), like SIP's 488 Not Acceptable Here; or the camera's kind has no pictures to snapshot (a simulated camera)." },
  CAPACITY: { http: 503, doc: "No node (or relay) has room for this: a MAX_CAMERAS or viewer limit is reached." },
  UNAVAILABLE: { http: 503, doc: "The cluster, or the part that serves this, cannot be reached right now; retry later." },
  INTERNAL: { http: 500, doc: "A bug or an unexpected failure; the log line with the same request has the details." },
} as const satisfies Record<string, { http: number; doc: string }>;

/** Codes a camera reports in its StatusEvent and CameraStatus `error`. */
export const CAMERA_ERROR_CODES = {
  SOURCE_UNREACHABLE: "The source refused the connection, timed out, or answered 404.",
  SOURCE_AUTH: "The source rejected the credentials (RTSP/HTTP 401 or 403).",
  SOURCE_NOT_ALLOWED: "The URL scheme is not allowed on this node (file: and testsrc: need ALLOW_LOCAL_SOURCES).",
  STREAM_STALLED: "No frame arrived for longer than the stall timeout.",
  UNSUPPORTED_CODEC: "The source's video is not H.264 and transcoding is not enabled.",
  FFMPEG_EXITED: "FFmpeg ended for a reason not covered by a more precise code.",
  WHIP_FAILED: "The WHIP server refused the offer, or the WebRTC session failed; ingest goes on.",
  DETECTOR_UNAVAILABLE: "The gRPC detector cannot be reached or missed its deadline; video goes on.",
  DETECTOR_UNSUPPORTED: "The detector does not offer a solution the camera asks for.",
  DETECTOR_FAILED: "The detector refused a frame or answered something that is not a valid result; video goes on, the next frame is tried.",
  LEASE_LOST: "This node could no longer renew the camera's lease and stopped it (self-fencing).",
  ACTOR_FAILED: "The actor threw or reached a failure state; its node restarts it with backoff.",
} as const satisfies Record<string, string>;

export type ControlErrorCode = keyof typeof CONTROL_ERROR_CODES;
export type CameraErrorCode = keyof typeof CAMERA_ERROR_CODES;
export type ErrorCode = ControlErrorCode | CameraErrorCode;

export const CONTROL_ERROR_CODE_NAMES = Object.keys(CONTROL_ERROR_CODES) as [ControlErrorCode, ...ControlErrorCode[]];
export const CAMERA_ERROR_CODE_NAMES = Object.keys(CAMERA_ERROR_CODES) as [CameraErrorCode, ...CameraErrorCode[]];

/** HTTP status for a control error code. */
export function httpStatusOf(code: ControlErrorCode): number {
  return CONTROL_ERROR_CODES[code].http;
}

/**
 * An error that crosses a boundary (NATS reply, HTTP response, log) as a
 * value: a code from the registry, a message that names the field, a cause.
 */
export class CamfleetError extends Error {
  override readonly name = "CamfleetError";
  readonly code: ControlErrorCode;

  constructor(code: ControlErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  toJSON(): { code: ControlErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Turns anything thrown into a CamfleetError; unknown failures become INTERNAL. */
export function ensureCamfleetError(err: unknown): CamfleetError {
  if (err instanceof CamfleetError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CamfleetError("INTERNAL", message, { cause: err });
}
