import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { documentedRoutes } from "../gateway/openapi.ts";
import { CONFIG_VARIABLES } from "../runtime/config.ts";
import {
  BUCKETS,
  CAMERA_ERROR_CODE_NAMES,
  CAMERA_ERROR_CODES,
  CameraSpecSchema,
  CameraStatusSchema,
  CONTROL_ERROR_CODE_NAMES,
  CONTROL_ERROR_CODES,
  CONTROL_QUEUE,
  DetectionEventSchema,
  EXPECTED_REVISION_HEADER,
  LeaseSchema,
  MSG_ID_HEADER,
  NodeInfoSchema,
  PUBLISHER_EPOCH_HEADER,
  PUBLISHER_NODE_HEADER,
  RelaySchema,
  StatusEventSchema,
  STREAMS,
  subjects,
} from "../subjects/index.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");

describe("README", () => {
  it.each(Object.entries(CONTROL_ERROR_CODES))("documents control error %s with its HTTP status", (code, { http }) => {
    expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\| ${http} \\|`, "m"));
  });

  it.each(Object.keys(CAMERA_ERROR_CODES))("documents camera error %s", (code) => {
    expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\|`, "m"));
  });

  it.each(CONFIG_VARIABLES.map((v) => [v.name, v.alias] as const))("documents variable %s", (name, alias) => {
    expect(readme).toMatch(new RegExp(`^\\| \`${name}\` \\|${alias === undefined ? "" : ` \`${alias}\``} \\|`, "m"));
  });
});

// docs/contract.md is the contract as built: every name the code spells in
// subjects/ and every route the gateway documents is in it, and every field
// of the wire schemas. And no tracked file points outside the repository.

const contract = readFileSync(new URL("../docs/contract.md", import.meta.url), "utf8");

/** Field names of a zod object schema (unwrapping optional/default/pipe wrappers of the object itself). */
function fieldsOf(schema: unknown): string[] {
  let s = schema as { shape?: Record<string, unknown>; def?: { innerType?: unknown; in?: unknown } };
  for (let i = 0; i < 5 && s.shape === undefined; i++) s = (s.def?.innerType ?? s.def?.in) as typeof s;
  return Object.keys(s.shape ?? {});
}

describe("docs/contract.md", () => {
  const names = [
    ...Object.values(STREAMS),
    ...Object.values(BUCKETS),
    CONTROL_QUEUE,
    MSG_ID_HEADER,
    EXPECTED_REVISION_HEADER,
    PUBLISHER_NODE_HEADER,
    PUBLISHER_EPOCH_HEADER,
    subjects.statusAll,
    subjects.detectionsAll,
  ];
  it.each(names)("names %s", (name) => {
    expect(contract).toContain(name);
  });

  const ctl = Object.entries(subjects.ctl).flatMap(([key, s]) => {
    if (typeof s === "string") return key.endsWith("Any") ? [] : [s];
    return [(s as (id: string) => string)("X1").replace(".X1.", key.startsWith("node") ? ".<node>." : ".<id>.")];
  });
  it.each(ctl)("lists control subject %s", (subject) => {
    expect(contract).toContain(`\`${subject}\``);
  });

  it.each(documentedRoutes())("lists HTTP route %s", (route) => {
    const [method, path] = route.split(" ") as [string, string];
    const rows = contract.split("\n").filter((l) => l.startsWith(`| ${method} |`) || l.startsWith(`| ${method}, `) || new RegExp(`^\\| [A-Z, ]*\\b${method}\\b[A-Z, ]* \\|`).test(l));
    expect(rows.some((l) => l.includes(`\`${path}\``) || l.includes(`\`${path}?`) || l.includes(`\`${path}[`)), `${route}: no table row "| ${method} | \`${path}\` |"`).toBe(true);
  });

  it.each([...CONTROL_ERROR_CODE_NAMES, ...CAMERA_ERROR_CODE_NAMES])("explains error code %s", (code) => {
    expect(contract).toMatch(new RegExp(`^\\| \`${code}\` \\|`, "m"));
  });

  const shapes = {
    CameraSpec: CameraSpecSchema,
    Lease: LeaseSchema,
    NodeInfo: NodeInfoSchema,
    Relay: RelaySchema,
    StatusEvent: StatusEventSchema,
    DetectionEvent: DetectionEventSchema,
    CameraStatus: CameraStatusSchema,
  };
  it.each(Object.entries(shapes).flatMap(([shape, schema]) => fieldsOf(schema).map((field) => [shape, field] as const)))("%s field %s is described", (_shape, field) => {
    expect(contract).toMatch(new RegExp(`\\b${field}\\b`));
  });
  it("has at least one field per shape (the schema reader works)", () => {
    for (const [shape, schema] of Object.entries(shapes)) expect(fieldsOf(schema).length, shape).toBeGreaterThan(3);
  });

  it("shows an example of each message shape, as JSON that parses and uses only its schema's fields", () => {
    const examples = [...contract.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!) as Record<string, unknown>);
    // Which shape an example is: events by `type`, the rest by a field only they have.
    const shapeOf = (ex: Record<string, unknown>): keyof typeof shapes | "reply" | undefined => {
      if (ex.type === "status") return "StatusEvent";
      if (ex.type === "detection") return "DetectionEvent";
      if ("ok" in ex || ("error" in ex && Object.keys(ex).length === 1)) return "ok" in ex && ex.ok === true ? "CameraStatus" : "reply";
      if ("url" in ex && "rtsp_transport" in ex) return "CameraSpec";
      if ("acquired_ts" in ex) return "Lease";
      if ("heartbeat_ts" in ex) return "NodeInfo";
      if ("claimed_ts" in ex) return "Relay";
      return undefined;
    };
    const seen = new Set<string>();
    for (const ex of examples) {
      const shape = shapeOf(ex);
      expect(shape, JSON.stringify(ex)).toBeDefined();
      seen.add(shape!);
      if (shape === "reply") {
        expect(Object.keys(ex.error as object).sort()).toEqual(["code", "message"]);
        continue;
      }
      const allowed = new Set([...fieldsOf(shapes[shape!]), ...(shape === "CameraStatus" ? ["ok"] : [])]);
      expect(Object.keys(ex).filter((k) => !allowed.has(k)), `${shape} example`).toEqual([]);
      const { ok: _ok, ...body } = ex;
      expect(() => shapes[shape!].parse(body), `${shape} example`).not.toThrow();
    }
    expect([...seen].sort()).toEqual([...Object.keys(shapes), "reply"].sort());
  });
});

describe("no tracked file points outside the repository", () => {
  const tracked = execFileSync("git", ["ls-files"], { cwd: ROOT, encoding: "utf8" }).split("\n").filter((f) => f !== "" && existsSync(join(ROOT, f)));
  const text = (f: string) => readFileSync(join(ROOT, f), "utf8");
  const textFiles = tracked.filter((f) => /\.(ts|mjs|js|md|json|ya?ml|sh|conf|service|py|proto|example|html)$|Dockerfile/.test(f) && f !== "package-lock.json");

  it("no path into a folder beside the clone and no external design document (the repository's docs are docs/)", () => {
    const self = "test/docs.test.ts";
    const hits = textFiles.filter((f) => f !== self).flatMap((f) =>
      text(f)
        .split("\n")
        .map((line, i) => ({ line, i }))
        .filter(({ line }) => /\.\.\/shared\/|\bshared\/DESIGN|DESIGN\.md|\/work\//.test(line))
        .map(({ line, i }) => `${f}:${i + 1}: ${line.trim()}`),
    );
    expect(hits).toEqual([]);
  });

  it("every relative link in a Markdown file resolves to a file in the repository", () => {
    const broken: string[] = [];
    for (const f of tracked.filter((t) => t.endsWith(".md"))) {
      for (const m of text(f).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target) || target.startsWith("#")) continue;
        const path = target.split("#")[0]!;
        const resolved = normalize(join(dirname(join(ROOT, f)), decodeURIComponent(path)));
        if (!resolved.startsWith(ROOT) || !existsSync(resolved)) broken.push(`${f}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
