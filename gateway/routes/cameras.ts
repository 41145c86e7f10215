import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ControlClient } from "../../runtime/index.ts";
import { assertId, CameraSpecPatchSchema, CameraSpecSchema, CamfleetError, parseOrThrow, type CameraSpec, type CameraSpecInput } from "../../subjects/index.ts";
import type { GatewayCore } from "../core.ts";

/**
 * Camera config routes (docs/contract.md, "HTTP gateway"):
 *   POST /cameras                  CameraSpec → 201, Location, ETag (409 if the id exists)
 *   GET /cameras/{id}              → CameraSpec (URL redacted), ETag
 *   PUT /cameras/{id}              CameraSpec (id optional, must match) → 200, ETag
 *   PATCH /cameras/{id}            partial CameraSpec, merged (`ai` field by field) → 200, ETag
 *   DELETE /cameras/{id}           → 204
 * The ETag is the spec's KV revision; `If-Match` makes PUT, PATCH and DELETE
 * revision-checked (412 PRECONDITION_FAILED when the camera changed), `If-None-Match: *`
 * makes PUT create-only. Writes go through the control subjects, so a node
 * checks the spec (local sources, AI defaults) exactly as for the CLI.
 */
export function cameraRoutes(app: FastifyInstance, deps: { core: GatewayCore; control: ControlClient }): void {
  const { core, control } = deps;

  const send = (reply: FastifyReply, status: number, camera: CameraSpec, revision: number | undefined) => {
    if (revision !== undefined) reply.header("etag", etagOf(revision));
    return reply.code(status).header("cache-control", "no-store").send(camera);
  };

  /** The revision a write must find, from If-Match / If-None-Match; `*` is resolved against the stored spec. */
  const expectedRevision = async (req: FastifyRequest, id: string): Promise<number | undefined> => {
    const ifMatch = parseIfMatch(req.headers["if-match"]);
    if (req.headers["if-none-match"] !== undefined) {
      if (req.headers["if-none-match"].trim() !== "*") throw new CamfleetError("INVALID_ARGUMENT", 'header If-None-Match: only "*" (create only) is supported on writes');
      if (ifMatch !== undefined) throw new CamfleetError("INVALID_ARGUMENT", "headers If-Match and If-None-Match: give one, not both");
      return 0;
    }
    if (ifMatch !== "*") return ifMatch;
    const current = await control.getCamera(id).catch((err: unknown) => {
      if (err instanceof CamfleetError && err.code === "NOT_FOUND") throw new CamfleetError("PRECONDITION_FAILED", `If-Match: *: camera ${id} does not exist`);
      throw err;
    });
    return current.revision;
  };

  app.post("/cameras", async (req, reply) => {
    const spec = parseOrThrow(CameraSpecSchema, req.body, "CameraSpec");
    // The body as given, not the parsed one: defaults the caller left out are the node's (AI_MAX_FPS, …).
    const { camera, revision } = await control.putCamera(req.body as CameraSpecInput, { expectedRevision: 0 }).catch((err: unknown) => {
      if (err instanceof CamfleetError && err.code === "CONFLICT") throw new CamfleetError("CONFLICT", `camera ${spec.id} exists already; PUT /cameras/${spec.id} replaces it`);
      throw err;
    });
    reply.header("location", `${core.publicUrl}/cameras/${camera.id}`);
    return send(reply, 201, camera, revision);
  });

  app.get<{ Params: { id: string } }>("/cameras/:id", async (req, reply) => {
    const id = assertId("camera", req.params.id);
    const { camera, revision } = await control.getCamera(id);
    return send(reply, 200, camera, revision);
  });

  app.put<{ Params: { id: string } }>("/cameras/:id", async (req, reply) => {
    const id = assertId("camera", req.params.id);
    const body = objectBody(req.body);
    if (body.id !== undefined && body.id !== id) throw new CamfleetError("INVALID_ARGUMENT", `invalid CameraSpec: id: must be the id of the path (${id}) or left out`);
    const input = { ...body, id };
    parseOrThrow(CameraSpecSchema, input, "CameraSpec");
    const expected = await expectedRevision(req, id);
    const { camera, revision } = await control.putCamera(input as CameraSpecInput, expected !== undefined ? { expectedRevision: expected } : {});
    return send(reply, 200, camera, revision);
  });

  app.patch<{ Params: { id: string } }>("/cameras/:id", async (req, reply) => {
    const id = assertId("camera", req.params.id);
    const patch = parseOrThrow(CameraSpecPatchSchema, req.body, "CameraSpec patch");
    const wanted = parseIfMatch(req.headers["if-match"]);
    // Without If-Match a race with another writer is retried on fresh data; with it, the caller decides.
    for (let attempt = 1; ; attempt++) {
      const current = await control.getCamera(id);
      if (typeof wanted === "number" && current.revision !== wanted) {
        throw new CamfleetError("PRECONDITION_FAILED", `camera ${id} is at revision ${current.revision ?? "unknown"}, not ${wanted}; re-read it and retry`);
      }
      // The stored URL comes back redacted; the node keeps the stored one when the redacted form is written back.
      const merged = { ...current.camera, ...patch, ai: { ...current.camera.ai, ...(patch.ai ?? {}) }, id };
      parseOrThrow(CameraSpecSchema, merged, "CameraSpec");
      try {
        const { camera, revision } = await control.putCamera(merged, current.revision !== undefined ? { expectedRevision: current.revision } : {});
        return send(reply, 200, camera, revision);
      } catch (err) {
        if (!(err instanceof CamfleetError && err.code === "PRECONDITION_FAILED") || typeof wanted === "number") throw err;
        if (attempt >= 5) throw new CamfleetError("CONFLICT", `camera ${id} is being changed concurrently; retry`);
      }
    }
  });

  app.delete<{ Params: { id: string } }>("/cameras/:id", async (req, reply) => {
    const id = assertId("camera", req.params.id);
    if (req.headers["if-none-match"] !== undefined) throw new CamfleetError("INVALID_ARGUMENT", "header If-None-Match: not supported on DELETE");
    const expected = await expectedRevision(req, id);
    await control.deleteCamera(id, expected !== undefined ? { expectedRevision: expected } : {});
    return reply.code(204).header("cache-control", "no-store").send();
  });
}

/** A strong ETag from a KV revision. */
export function etagOf(revision: number): string {
  return `"${revision}"`;
}

/** If-Match: one strong ETag of ours, or `*`. A list or a weak tag is refused, not guessed at. */
export function parseIfMatch(header: string | string[] | undefined): number | "*" | undefined {
  if (header === undefined) return undefined;
  const value = (Array.isArray(header) ? header.join(",") : header).trim();
  if (value === "*") return "*";
  const m = /^"([1-9]\d{0,14})"$/.exec(value);
  if (m === null) throw new CamfleetError("INVALID_ARGUMENT", `header If-Match: must be one ETag as GET /cameras/{id} gives it (e.g. "42") or *, got ${JSON.stringify(value.slice(0, 40))}`);
  return Number(m[1]);
}

function objectBody(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new CamfleetError("INVALID_ARGUMENT", "invalid CameraSpec: (body): must be a JSON object");
  }
  return body as Record<string, unknown>;
}
