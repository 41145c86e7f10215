import { request as httpRequestRaw, type IncomingHttpHeaders } from "node:http";
import { request as httpsRequestRaw } from "node:https";

/**
 * The WHIP client's HTTP: one request through node:http/https, following
 * 307/308 redirects with method and body kept (how a WHIP server, or a
 * camfleet gateway that does not hold the camera's relay, points elsewhere).
 *
 * Why not fetch(): Node's fetch is undici, whose HTTP parser is a WebAssembly
 * module; the first fetch() in a process compiles it and loads undici's
 * JavaScript, ~18 MB of resident memory (11 MB of it private) in a process
 * that otherwise makes two HTTP requests per WHIP session. A camera node
 * never needs it (node:http: ~2 MB).
 */

export interface WhipHttpResponse {
  status: number;
  statusText: string;
  headers: IncomingHttpHeaders;
  /** The URL that answered, after redirects. */
  url: string;
  body: string;
}

export interface WhipHttpRequest {
  method: "POST" | "DELETE";
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /**
   * Whether a redirect to another origin may carry the request's
   * Authorization header (e.g. a camfleet gateway the cluster itself names).
   * Default: never; the redirected request goes without it.
   */
  trustOrigin?: (origin: string) => boolean | Promise<boolean>;
}

/** A redirect that would weaken the request: from https to http. */
export class WhipRedirectError extends Error {
  override name = "WhipRedirectError";
}

/** Redirects followed at most; the last answer is returned as it is. */
const MAX_REDIRECTS = 5;
/** A response body larger than this fails the request (an SDP answer is a few KB). */
const MAX_BODY_BYTES = 1 << 20;

/**
 * Follows redirects as browsers do with credentials: Authorization goes only
 * to the origin it was meant for (or one `trustOrigin` vouches for), and a
 * redirect from https to http is refused outright (the body is an SDP offer
 * with ICE credentials; the header a token).
 */
export async function whipHttp(url: string, init: WhipHttpRequest): Promise<WhipHttpResponse> {
  const origin = new URL(url).origin;
  let current = url;
  let request = init;
  for (let hop = 0; ; hop++) {
    const res = await once(current, request);
    const location = res.headers.location;
    if ((res.status === 307 || res.status === 308) && location !== undefined && hop < MAX_REDIRECTS) {
      const next = new URL(location, current);
      checkRedirect(current, next.href);
      if (next.origin !== origin && request.headers !== undefined && hasAuthorization(request.headers) && !(await init.trustOrigin?.(next.origin))) {
        request = { ...request, headers: withoutAuthorization(request.headers) };
      }
      current = next.href;
      continue;
    }
    return res;
  }
}

/** Throws WhipRedirectError for a redirect that leaves https. */
export function checkRedirect(from: string, to: string): void {
  const next = new URL(to);
  if (new URL(from).protocol === "https:" && next.protocol !== "https:") {
    throw new WhipRedirectError(`refused a redirect from https to ${next.protocol.slice(0, -1)} (${next.origin})`);
  }
}

function hasAuthorization(headers: Record<string, string>): boolean {
  return Object.keys(headers).some((k) => k.toLowerCase() === "authorization");
}

function withoutAuthorization(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== "authorization"));
}

function once(url: string, init: WhipHttpRequest): Promise<WhipHttpResponse> {
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequestRaw : target.protocol === "http:" ? httpRequestRaw : undefined;
  if (send === undefined) return Promise.reject(new Error(`unsupported URL scheme ${target.protocol}`));
  const headers: Record<string, string | number> = { ...init.headers };
  if (init.body !== undefined) headers["Content-Length"] = Buffer.byteLength(init.body);
  return new Promise((resolve, reject) => {
    const req = send(target, { method: init.method, headers, ...(init.signal !== undefined ? { signal: init.signal } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) req.destroy(new Error(`the response body is larger than ${MAX_BODY_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? "", headers: res.headers, url, body: Buffer.concat(chunks).toString("utf8") }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(init.body);
  });
}
