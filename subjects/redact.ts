/**
 * The one place credentials are scrubbed. Every log line, reply and status
 * that may carry a URL or FFmpeg output goes through `redact`.
 *
 *   rtsp://admin:pw@10.0.0.5/stream  →  rtsp://***@10.0.0.5/stream
 *   https://host/x?token=abc          →  https://host/x?token=***
 */

// scheme://userinfo@ — userinfo is everything up to the last '@' before the
// first '/', so passwords containing '@', ':', '?' or '#' are covered too (a
// query holding an '@' before any '/' is scrubbed with them: too much, never
// too little). A '/' in a password must be written %2F, as URLs require.
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/"'<>]*@/gi;
// Query and option parameters that carry secrets: passwords and tokens, SRT's
// passphrase and streamid (which often carries a key), signed-URL signatures.
const SECRET_PARAM =
  /([?&;](?:password|passwd|pwd|pass|passphrase|token|access_token|refresh_token|id_token|secret|client_secret|api_key|apikey|auth|key|streamid|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|jwt|session|sessionid)=)[^&\s"']*/gi;
const BEARER = /\b(Bearer\s+)[A-Za-z0-9._~+/=-]+/g;

/** Scrubs credentials from a URL or from free text containing URLs. */
export function redact(text: string): string {
  return text.replace(USERINFO, "$1***@").replace(SECRET_PARAM, "$1***").replace(BEARER, "$1***");
}

/** Deep copy with every string redacted; for log objects and replies. */
export function redactDeep<T>(value: T): T {
  return walk(value, 0) as T;
}

function walk(value: unknown, depth: number): unknown {
  if (typeof value === "string") return redact(value);
  if (depth > 8 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => walk(v, depth + 1));
  if (value instanceof Error) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = walk(v, depth + 1);
  return out;
}
