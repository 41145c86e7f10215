import type { FastifyInstance } from "fastify";
import type { Registry } from "prom-client";

/** Operations routes: GET /health (legacy), /healthz, /readyz, /metrics. */
export function opsRoutes(app: FastifyInstance, deps: { registry: Registry; notReadyReason: () => string | undefined }): void {
  app.get("/health", async () => ({ status: "ok" }));
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const reason = deps.notReadyReason();
    return reply.code(reason === undefined ? 200 : 503).send(reason === undefined ? { status: "ready" } : { status: "not ready", reason });
  });
  app.get("/metrics", async (_req, reply) => reply.header("content-type", deps.registry.contentType).send(await deps.registry.metrics()));
}
