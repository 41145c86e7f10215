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
}

export interface OpsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * /metrics (Prometheus), /healthz (the process answers) and /readyz (it can
 * do its job: connected to NATS, set up) of a node.
 */
export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
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
