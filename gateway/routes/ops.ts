import type { FastifyInstance } from "fastify";
import type { Registry } from "prom-client";
import type { ControlClient } from "../../runtime/index.ts";
import { assertId, http, parseOrThrow } from "../../subjects/index.ts";

/** Operations routes: GET /health (legacy), /healthz, /readyz, /metrics, and POST /nodes/{node}/drain. */
export function opsRoutes(app: FastifyInstance, deps: { registry: Registry; notReadyReason: () => string | undefined; control: ControlClient }): void {
  app.get("/health", async () => ({ status: "ok" }));
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const reason = deps.notReadyReason();
    return reply.code(reason === undefined ? 200 : 503).send(reason === undefined ? { status: "ready" } : { status: "not ready", reason });
  });
  app.get("/metrics", async (_req, reply) => reply.header("content-type", deps.registry.contentType).send(await deps.registry.metrics()));
  // The node answers once its cameras are handed over (each one's lease released), so this may take a few seconds.
  app.post<{ Params: { node: string } }>("/nodes/:node/drain", async (req) => {
    const node = assertId("node", req.params.node);
    parseOrThrow(http.noBody, req.body, "drain request");
    const { released } = await deps.control.drainNode(node);
    return { node, draining: true, released };
  });
}
