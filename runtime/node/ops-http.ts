import { timingSafeEqual } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "../logger.ts";

export interface OpsServerOptions {
  host: string;
  /** 0 = any free port; the bound one is in `url`. */
  port: number;
  registry: Registry;
  /** Why the process is not ready, or undefined when it is. */
  notReadyReason: () => string | undefined;
  logger: Logger;
  /** POST /drain: hand every camera over and claim no more; resolves with how many were released. */
  drain?: () => Promise<number>;
  /** CAMFLEET_API_TOKEN: POST /drain then needs `Authorization: Bearer <token>` (reads stay open, as Prometheus and probes expect). */
  apiToken?: string;
}

export interface OpsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * /metrics (Prometheus), /healthz (the process answers) and /readyz (it can
 * do its job: connected to NATS, set up) of a node, and POST /drain (a
 * Kubernetes preStop hook: `curl -X POST localhost:9108/drain`).
 */
export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (path === "/drain" && options.drain !== undefined) {
      drain(req.method, req.headers.authorization, options.drain, options.apiToken, options.logger, send);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, "application/json", JSON.stringify({ error: { code: "INVALID_ARGUMENT", message: `${req.method} is not allowed here` } }));
      return;
    }
    switch (path) {
      case "/healthz":
        send(200, "application/json", JSON.stringify({ status: "ok" }));
        return;
      case "/readyz": {
        const reason = options.notReadyReason();
        send(reason === undefined ? 200 : 503, "application/json", JSON.stringify(reason === undefined ? { status: "ready" } : { status: "not ready", reason }));
        return;
      }
      case "/metrics":
        options.registry.metrics().then(
          (text) => send(200, options.registry.contentType, text),
          (err: unknown) => {
            options.logger.error({ err }, "collecting metrics failed");
            send(500, "application/json", JSON.stringify({ error: { code: "INTERNAL", message: "collecting metrics failed" } }));
          },
        );
        return;
      default:
        send(404, "application/json", JSON.stringify({ error: { code: "NOT_FOUND", message: `no route ${path}` } }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host.includes(":") ? `[${options.host}]` : options.host;
  return {
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

type Send = (status: number, type: string, body: string) => void;
const JSON_TYPE = "application/json";
const errorBody = (code: string, message: string) => JSON.stringify({ error: { code, message } });

function drain(method: string | undefined, authorization: string | undefined, run: () => Promise<number>, token: string | undefined, logger: Logger, send: Send): void {
  if (method !== "POST") {
    send(405, JSON_TYPE, errorBody("INVALID_ARGUMENT", `${method} /drain is not allowed: use POST`));
    return;
  }
  if (token !== undefined && !bearerMatches(authorization, token)) {
    send(401, JSON_TYPE, errorBody("UNAUTHENTICATED", "POST /drain needs Authorization: Bearer <CAMFLEET_API_TOKEN>"));
    return;
  }
  run().then(
    (released) => send(200, JSON_TYPE, JSON.stringify({ released })),
    (err: unknown) => {
      logger.error({ err }, "drain failed");
      send(500, JSON_TYPE, errorBody("INTERNAL", "drain failed; the node log has the details"));
    },
  );
}

/** Constant-time comparison, so the answer's timing says nothing about the token. */
function bearerMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(/^Bearer (.+)$/.exec(header ?? "")?.[1] ?? "");
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
