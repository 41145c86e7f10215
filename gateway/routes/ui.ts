import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { parseSince, toCamfleetError, type NatsConnection } from "../../runtime/index.ts";
import { assertId, CamfleetError, parseOrThrow, subjects, type StatusEvent } from "../../subjects/index.ts";
import { EventStore } from "../event-store.ts";
import { prefersHtml } from "../http.ts";

/**
 * The dashboard (gateway/ui/) and the one route it needed that the API did not have:
 *   GET /ui/…                          the page and its files (open: they hold no data; see http.ts)
 *   GET /ui/vendor/{file}              Preact, htm and eventsource-parser as ES modules, from node_modules
 *   GET /  with Accept: text/html      the page (API clients keep getting the capabilities JSON of legacy.ts)
 *   GET /cameras/{id}/status/history   a camera's state changes (status `edge` events) of the last hour, from CAMFLEET_STATUS
 * No build step: the browser loads the modules as they ship, mapped by the import map in index.html.
 */

export interface UiRoutesDeps {
  nc: NatsConnection;
}

export const UI_DIR = fileURLToPath(new URL("../ui/", import.meta.url));

const require = createRequire(import.meta.url);

/** The folder of an installed package (its package.json named `name`), found from its main entry. */
function packageDir(name: string): string {
  let dir = dirname(require.resolve(name));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === name) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`package ${name} not found`);
    dir = up;
  }
}

/** The browser's modules: a fixed table, so nothing else of node_modules is reachable. */
function vendorFiles(): Map<string, { dir: string; file: string }> {
  const entry = (pkg: string, path: string) => {
    const full = join(packageDir(pkg), path);
    return { dir: dirname(full), file: full.slice(dirname(full).length + 1) };
  };
  return new Map([
    ["preact.mjs", entry("preact", "dist/preact.mjs")],
    ["preact-hooks.mjs", entry("preact", "hooks/dist/hooks.mjs")],
    ["htm.mjs", entry("htm", "dist/htm.mjs")],
    ["eventsource-parser.js", entry("eventsource-parser", "dist/index.js")],
  ]);
}

export const StatusHistoryQuerySchema = z.strictObject({
  since: z.string().max(64).optional(),
  limit: z
    .string()
    .regex(/^\d{1,4}$/, "must be a whole number from 1 to 1000")
    .transform(Number)
    .refine((n) => n >= 1 && n <= 1000, "must be a whole number from 1 to 1000")
    .optional(),
});

/** Status events one history request reads at most (a camera says one every 5 s: an hour is ~720). */
const STATUS_SCAN_BUDGET = 20_000;
const DEFAULT_STATUS_LIMIT = 500;

export function uiRoutes(app: FastifyInstance, deps: UiRoutesDeps): void {
  const vendor = vendorFiles();

  void app.register(fastifyStatic, {
    root: UI_DIR,
    prefix: "/ui/",
    // The page changes with the gateway's version; a browser asks again each time rather than run an old script.
    cacheControl: false,
    setHeaders: (reply) => void reply.header("cache-control", "no-cache"),
  });

  app.get<{ Params: { file: string } }>("/ui/vendor/:file", async (req, reply) => {
    const f = vendor.get(req.params.file);
    if (f === undefined) throw new CamfleetError("NOT_FOUND", `no file /ui/vendor/${req.params.file}`);
    return reply.header("cache-control", "public, max-age=3600").sendFile(f.file, f.dir);
  });

  // GET / belongs to legacy.ts (the worker's JSON). A browser's navigation is answered here first with the page.
  app.addHook("onRequest", async (req, reply) => {
    if (req.method !== "GET" && req.method !== "HEAD") return;
    if ((req.url.split("?")[0] ?? "") !== "/") return;
    // Caches must keep the two answers of `/` apart.
    void reply.header("vary", "Accept");
    if (!prefersHtml(req.headers.accept)) return;
    return reply.header("cache-control", "no-cache").sendFile("index.html", UI_DIR);
  });

  const store = new EventStore(deps.nc);
  app.get<{ Params: { id: string } }>("/cameras/:id/status/history", async (req, reply) => {
    const camera = assertId("camera", req.params.id);
    const q = parseOrThrow(StatusHistoryQuerySchema, req.query ?? {}, "query");
    const since = parseSince(q.since ?? "1h");
    const limit = q.limit ?? DEFAULT_STATUS_LIMIT;
    const events: StatusEvent[] = [];
    let truncated = false;
    try {
      const from = await store.firstSeqAtOrAfter("status", since);
      const to = await store.lastSeq("status");
      // Every tenant and site of that camera id, like the detection history; periodic events only repeat the state.
      const { read } = await store.readRange(
        "status",
        subjects.statusFilter({ camera }),
        from,
        to,
        (e) => {
          const s = e.event as StatusEvent;
          if (s.trigger !== "edge") return;
          events.push(s);
          // The newest `limit` are kept: the end of the hour is what a viewer looks at.
          if (events.length > limit) {
            events.shift();
            truncated = true;
          }
        },
        { max: STATUS_SCAN_BUDGET },
      );
      if (read >= STATUS_SCAN_BUDGET) truncated = true;
    } catch (err) {
      throw toCamfleetError(err, "JetStream");
    }
    return reply.header("cache-control", "no-store").send({ camera, since_ts: since.getTime(), events, truncated });
  });
}
