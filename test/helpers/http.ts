// JSON over HTTP against a gateway in tests: the status, the parsed body (or
// {} for an empty one) and the headers, whatever the status.

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface JsonResponse {
  status: number;
  body: Json;
  headers: Headers;
}

/** `method path` on `base.url`; an object body is sent as JSON, a string as it is. */
export async function callJson(base: { url: string }, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<JsonResponse> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] ??= "application/json";
  }
  const res = await fetch(`${base.url}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text === "" ? {} : (JSON.parse(text) as Json), headers: res.headers };
}
