// Every request of the page goes through here: one gateway, the bearer token
// on each call (WHEP and the event stream included), and the API's error
// shape {error: {code, message}} turned into an ApiError.
import { createParser } from "eventsource-parser";

const TOKEN_KEY = "camfleet.token";
const tokenListeners = new Set();

export const auth = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? undefined,
  /** True once the gateway answered 401: the page asks for the token. */
  needed: false,
};

export function onAuthChange(fn) {
  tokenListeners.add(fn);
  return () => tokenListeners.delete(fn);
}

function changed() {
  for (const fn of tokenListeners) fn();
}

export function setToken(token) {
  auth.token = token;
  auth.needed = false;
  // sessionStorage: the token lives as long as the tab, never in a cookie or the URL.
  sessionStorage.setItem(TOKEN_KEY, token);
  changed();
}

function unauthorized() {
  if (auth.needed) return;
  auth.needed = true;
  changed();
}

/** Resolves once a token has been entered (after a 401). */
function tokenEntered() {
  return new Promise((resolve) => {
    const off = onAuthChange(() => {
      if (!auth.needed) {
        off();
        resolve();
      }
    });
  });
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function authHeaders(extra = {}) {
  return auth.token !== undefined ? { ...extra, authorization: `Bearer ${auth.token}` } : { ...extra };
}

async function errorOf(res) {
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const e = body?.error;
  return new ApiError(res.status, e?.code ?? `HTTP_${res.status}`, e?.message ?? res.statusText);
}

/** A JSON call. Resolves with {data, res}; throws ApiError. */
export async function call(method, path, body, headers = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) unauthorized();
  if (!res.ok) throw await errorOf(res);
  if (res.status === 204) return { data: null, res };
  return { data: await res.json(), res };
}

export const api = {
  get: async (path) => (await call("GET", path)).data,
  post: async (path, body) => (await call("POST", path, body)).data,
  patch: async (path, body) => (await call("PATCH", path, body)).data,
  del: async (path) => (await call("DELETE", path)).data,
};

/** The camera's latest frame as an object URL (revoke it when replaced), or undefined when there is none yet. */
export async function snapshotUrl(camera, width = 480) {
  const res = await fetch(`/cameras/${encodeURIComponent(camera)}/snapshot.jpg?width=${width}`, { headers: authHeaders() });
  if (res.status === 401) unauthorized();
  if (!res.ok) return undefined;
  return URL.createObjectURL(await res.blob());
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The gateway's live events (GET /events, Server-Sent Events) read with
 * fetch, not EventSource: EventSource cannot send the Authorization header.
 * Reconnects after a second with Last-Event-ID, so nothing is missed or repeated.
 * `since` is where the first connection starts (a few seconds back: every
 * running camera has said its state in the last 5 s).
 */
export function openEvents({ since, onEvent, onState }) {
  let lastId;
  let stopped = false;
  let ctrl;
  const run = async () => {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const headers = authHeaders({ accept: "text/event-stream" });
        if (lastId !== undefined) headers["last-event-id"] = lastId;
        const query = lastId === undefined && since !== undefined ? `?since=${encodeURIComponent(since)}` : "";
        const res = await fetch(`/events${query}`, { headers, signal: ctrl.signal });
        if (res.status === 401) {
          unauthorized();
          onState("needs token");
          await tokenEntered();
          continue;
        }
        if (!res.ok) throw await errorOf(res);
        onState("live");
        const parser = createParser({
          onEvent: (ev) => {
            if (ev.id) lastId = ev.id;
            if (ev.event === "status" || ev.event === "detection") onEvent(ev.event, JSON.parse(ev.data));
          },
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
      } catch (err) {
        if (stopped) return;
        console.warn("event stream:", err);
      }
      onState("reconnecting");
      await sleep(1000);
    }
  };
  void run();
  return () => {
    stopped = true;
    ctrl?.abort();
  };
}
