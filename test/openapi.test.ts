// GET /openapi.json: a valid OpenAPI 3.1 document (checked by a real
// validator) that lists exactly the routes the gateway registers, with the
// zod schemas the routes validate with and every error code of the registry.

import { compileErrors, validate } from "@readme/openapi-parser";
import { describe, expect, it, onTestFinished } from "vitest";
import { CONTROL_ERROR_CODE_NAMES } from "../subjects/index.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";

type Doc = {
  openapi: string;
  security?: unknown;
  paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Record<string, unknown> }> }; responses: Record<string, { "x-error-codes"?: string[] }>; security?: unknown[] }>>;
  components: { schemas: { Error: { properties: { error: { properties: { code: { enum: string[] } } } } } } };
};

describe("GET /openapi.json", () => {
  it("is valid OpenAPI 3.1, documents every registered route and no other, and names every error code", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const gw = await startTestGateway({ natsUrl: nats.url, env: { CAMFLEET_API_TOKEN: "oa-token" }, onCleanup: onTestFinished });
    const res = await fetch(`${gw.url}/openapi.json`, { headers: { authorization: "Bearer oa-token" } });
    expect(res.status).toBe(200);
    const doc = (await res.json()) as Doc;

    const result = await validate(structuredClone(doc) as never);
    expect(result.valid, result.valid ? "" : compileErrors(result)).toBe(true);
    expect(doc.openapi).toBe("3.1.0");

    const documented = Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`));
    expect(new Set(documented)).toEqual(new Set(gw.routes));

    expect(doc.components.schemas.Error.properties.error.properties.code.enum).toEqual(CONTROL_ERROR_CODE_NAMES);
    // With a token set, every route but the probes says 401 UNAUTHENTICATED.
    expect(doc.paths["/cameras"]!.get!.responses["401"]!["x-error-codes"]).toContain("UNAUTHENTICATED");
    expect(doc.paths["/healthz"]!.get!.security).toEqual([]);
    expect(doc.paths["/healthz"]!.get!.responses["401"]).toBeUndefined();

    // Bodies come from the zod schemas the routes use: the camera spec names its fields, strict.
    const spec = doc.paths["/cameras"]!.post!.requestBody!.content["application/json"]!.schema as { properties: Record<string, unknown>; required: string[]; additionalProperties: boolean };
    expect(Object.keys(spec.properties)).toEqual(expect.arrayContaining(["id", "url", "tenant", "site", "solutions", "ai", "labels", "publish"]));
    expect(spec.required).toEqual(expect.arrayContaining(["id", "url"]));
    expect(spec.additionalProperties).toBe(false);
    expect(doc.paths["/whep/{id}"]!.post!.requestBody!.content).toHaveProperty("application/sdp");
  });
});
