import { timingSafeEqual } from "node:crypto";
import cors from "@fastify/cors";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from "fastify";
import type { Logger } from "../runtime/index.ts";
import { CamfleetError, CONTROL_ERROR_CODES, ensureCamfleetError, httpStatusOf, type ControlErrorCode } from "../subjects/index.ts";
import { MAX_SDP_BYTES } from "../media/index.ts";

/**
 * The gateway's HTTP server: fastify with camfleet's error shape
 * (`{error: {code, message}}`, statuses from subjects/errors.ts), an
 * `application/sdp` body parser, a body limit, and bearer-token auth.
 * Route modules (gateway/routes/: ops, legacy, cameras, events, media, pictures) register on it.
 */

/** Routes that answer without a token: liveness and readiness probes. */
const OPEN_PATHS = new Set(["/health", "/healthz", "/readyz"]);
/**
 * Routes browsers open without a way to set headers (EventSource, WebSocket):
 * there the token may come as `?token=` instead. Nothing logs a request's
 * query (fastify's own logger is off; our logs name the path only).
 */
const QUERY_TOKEN_PATHS = new Set(["/events", "/ws"]);
/**
 * The dashboard's page and its static files (routes/ui.ts) hold no data, and a
 * browser must load them before it can ask its user for the token: they are
 * open. Everything the page then shows comes from routes that need the token.
 */
export function isDashboardPage(method: string, path: string, accept: string | undefined): boolean {
  if (method !== "GET" && method !== "HEAD") return false;
  if (path === "/ui" || path.startsWith("/ui/")) return true;
  // `/` is the capabilities JSON for API clients and the page for browsers (which ask for text/html first).
  return path === "/" && prefersHtml(accept);
}

/** A browser's navigation (`Accept: text/html,…`); API clients send application/json, `*\/*` or nothing. */
export function prefersHtml(accept: string | undefined): boolean {
  return accept !== undefined && /(^|,)\s*text\/html\s*(;|,|$)/i.test(accept);
}
/** Pictures, which browsers open as an <img src>: the same `?token=`. */
const QUERY_TOKEN_PICTURES = /^\/cameras\/[^/]+\/(snapshot\.jpg|stream\/feed)$/;
/** Largest JSON body any route takes, bytes. */
export const MAX_JSON_BYTES = 128 * 1024;

export function createHttp(options: { logger: Logger; apiToken?: string; corsOrigins?: "*" | "off" | string[] }): FastifyInstance {
  const log = options.logger.child({ component: "http" });
  const app = Fastify({
    logger: false,
    bodyLimit: MAX_JSON_BYTES,
    return503OnClosing: true,
    forceCloseConnections: true,
    // The router's own refusals (a path parameter over maxParamLength, 100 characters: 414; bad percent-encoding)
    // would otherwise answer in fastify's shape: a bad id or URL is INVALID_ARGUMENT like any other.
    frameworkErrors: (err, _req, reply) =>
      sendError(
        reply,
        new CamfleetError(
          "INVALID_ARGUMENT",
          err.code === "FST_ERR_MAX_PARAM_LENGTH" ? "a path parameter is longer than 100 characters (ids have at most 64)" : "the URL is not valid (bad percent-encoding)",
        ),
      ),
  });

  // Browsers on other origins (a WHEP player, a dashboard elsewhere) may call every route. Auth is a bearer
  // header, never a cookie, so no credentials mode: a page can only use a token it was given.
  // The plugin answers every OPTIONS (204) before the auth hook runs: a preflight never carries credentials.
  const origins = options.corsOrigins ?? "*";
  if (origins !== "off") {
    void app.register(cors, {
      origin: origins === "*" ? "*" : origins,
      methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
      allowedHeaders: ["Authorization", "Content-Type", "If-Match", "Last-Event-ID"],
      // WHIP/WHEP clients read Location (the session) and Link (ICE servers); config clients read ETag.
      exposedHeaders: ["Location", "ETag", "Link", "WWW-Authenticate"],
      maxAge: 600,
      strictPreflight: false,
    });
  }

  // No route takes text/plain: without fastify's default parser such a body is refused (400), never ignored.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("application/sdp", { parseAs: "string", bodyLimit: MAX_SDP_BYTES }, (_req, body, done) => done(null, body));

  if (options.apiToken !== undefined) {
    const want = Buffer.from(`Bearer ${options.apiToken}`);
    app.addHook("onRequest", async (req, reply) => {
      const path = req.url.split("?")[0] ?? "";
      if (OPEN_PATHS.has(path) || isDashboardPage(req.method, path, req.headers.accept)) return;
      const queryToken = (QUERY_TOKEN_PATHS.has(path) || QUERY_TOKEN_PICTURES.test(path)) && req.headers.authorization === undefined ? (req.query as Record<string, unknown> | undefined)?.["token"] : undefined;
      const got = Buffer.from(typeof queryToken === "string" ? `Bearer ${queryToken}` : (req.headers.authorization ?? ""));
      if (got.length !== want.length || !timingSafeEqual(got, want)) {
        reply.header("www-authenticate", 'Bearer realm="camfleet"');
        return sendError(reply, new CamfleetError("UNAUTHENTICATED", "missing or wrong bearer token (Authorization: Bearer <CAMFLEET_API_TOKEN>)"));
      }
    });
  }

  app.setNotFoundHandler((req, reply) => sendError(reply, new CamfleetError("NOT_FOUND", `no route ${req.method} ${req.url.split("?")[0]}`)));

  app.setErrorHandler((err: FastifyError | CamfleetError, req, reply) => {
    const e = toCamfleetError(err);
    if (e.code === "INTERNAL") log.error({ err, method: req.method, url: req.url.split("?")[0] }, "request failed");
    return sendError(reply, e);
  });
  return app;
}

/** fastify's own errors (body too large, bad content type, bad JSON) in camfleet's codes. */
function toCamfleetError(err: unknown): CamfleetError {
  if (err instanceof CamfleetError) return err;
  const fe = err as Partial<FastifyError>;
  if (typeof fe.statusCode === "number" && typeof fe.code === "string" && fe.code.startsWith("FST_")) {
    if (fe.statusCode === 413) return new CamfleetError("PAYLOAD_TOO_LARGE", `the request body is larger than this route accepts (${fe.code})`);
    if (fe.statusCode === 415) return new CamfleetError("INVALID_ARGUMENT", `unsupported Content-Type: ${fe.message ?? ""}`.trim());
    if (fe.statusCode >= 400 && fe.statusCode < 500) return new CamfleetError("INVALID_ARGUMENT", fe.message ?? "bad request");
  }
  return ensureCamfleetError(err);
}

export function sendError(reply: FastifyReply, err: CamfleetError): FastifyReply {
  const code: ControlErrorCode = err.code in CONTROL_ERROR_CODES ? err.code : "INTERNAL";
  return reply
    .code(httpStatusOf(code))
    .header("content-type", "application/json; charset=utf-8")
    .header("cache-control", "no-store")
    .send(JSON.stringify({ error: { code, message: err.message } }));
}
