import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { CONFIG_VARIABLES } from "../runtime/config.ts";
import { CAMERA_ERROR_CODES, CONTROL_ERROR_CODES } from "../subjects/index.ts";

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
