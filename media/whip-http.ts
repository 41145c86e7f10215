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
}

/** Redirects followed at most; the last answer is returned as it is. */
const MAX_REDIRECTS = 5;
/** A response body larger than this fails the request (an SDP answer is a few KB). */
const MAX_BODY_BYTES = 1 << 20;

export async function whipHttp(url: string, init: WhipHttpRequest): Promise<WhipHttpResponse> {
  let current = url;
  for (let hop = 0; ; hop++) {
    const res = await once(current, init);
    const location = res.headers.location;
    if ((res.status === 307 || res.status === 308) && location !== undefined && hop < MAX_REDIRECTS) {
      current = new URL(location, current).href;
      continue;
    }
    return res;
  }
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
