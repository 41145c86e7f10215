// The import rules of docs/architecture.md, checked on the code itself: every
// relative import of every source file, read as text. No processes.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));
/** The folders that make up camfleet (tests, benchmarks and examples are its users). */
const PARTS = ["subjects", "media", "runtime", "proto", "actors", "gateway", "cli"] as const;
type Part = (typeof PARTS)[number];

/** Which parts each part may import (besides itself). */
const MAY_USE: Record<Part, readonly Part[]> = {
  subjects: [],
  media: ["subjects"],
  runtime: ["subjects"],
  proto: ["subjects"],
  actors: ["subjects", "media", "runtime", "proto"],
  gateway: ["subjects", "media", "runtime"],
  cli: ["subjects", "runtime", "proto", "actors", "gateway"],
};

interface Import {
  from: string;
  to: string;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) return sourceFiles(path);
    return name.endsWith(".ts") ? [path] : [];
  });
}

const IMPORT = /^\s*(?:import|export)\s[^;]*?from\s+["'](\.{1,2}\/[^"']+)["']|^\s*import\s+["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/gm;

const files = PARTS.flatMap((p) => sourceFiles(p));
const imports: Import[] = files.flatMap((from) => {
  const text = readFileSync(join(ROOT, from), "utf8");
  return [...text.matchAll(IMPORT)].map((m) => ({ from, to: relative(ROOT, normalize(join(ROOT, dirname(from), m[1] ?? m[2] ?? m[3]!))) }));
});

const partOf = (path: string): Part | undefined => PARTS.find((p) => path === p || path.startsWith(`${p}/`));
/** runtime/node/x.ts → runtime/node; media/x.ts → media. The unit whose index is its public face. */
const folderOf = (path: string): string => {
  const parts = path.split("/");
  return parts[0] === "runtime" && parts.length > 2 ? parts.slice(0, 2).join("/") : parts[0]!;
};

describe("import rules", () => {
  it("reads the imports of every part", () => {
    for (const part of PARTS) expect(files.some((f) => partOf(f) === part), part).toBe(true);
    expect(imports.length).toBeGreaterThan(100);
    // The reader is not blind: a known arrow is found.
    expect(imports).toContainEqual({ from: "actors/index.ts", to: "media/index.ts" });
  });

  it.each(PARTS)("%s imports only the parts it may use", (part) => {
    const wrong = imports.filter((i) => partOf(i.from) === part && partOf(i.to) !== part && !MAY_USE[part].includes(partOf(i.to)!));
    expect(wrong.map((i) => `${i.from} → ${i.to}`)).toEqual([]);
  });

  it("every other folder is reached through its index.ts", () => {
    const reaching = imports.filter((i) => {
      if (folderOf(i.from) === folderOf(i.to)) return false;
      // runtime/'s own shared files (config, logger, metrics, clock…) are runtime's base, used by its parts.
      if (partOf(i.from) === "runtime" && partOf(i.to) === "runtime" && i.to.split("/").length === 2) return false;
      return !i.to.endsWith("/index.ts") && i.to !== "runtime/index.ts";
    });
    expect(reaching.map((i) => `${i.from} → ${i.to}`)).toEqual([]);
  });

  it("no import cycles between files", () => {
    const graph = new Map<string, string[]>();
    for (const i of imports) graph.set(i.from, [...(graph.get(i.from) ?? []), i.to]);
    const state = new Map<string, "open" | "done">();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === "done") return;
      if (state.get(f) === "open") {
        cycles.push([...path.slice(path.indexOf(f)), f].join(" → "));
        return;
      }
      state.set(f, "open");
      for (const t of graph.get(f) ?? []) visit(t, [...path, f]);
      state.set(f, "done");
    };
    for (const f of files) visit(f, []);
    expect(cycles).toEqual([]);
  });

  it("H.264 NAL units are parsed in media/ only", () => {
    // A NAL type is the low five bits of a NAL header: `& 0x1f` is how every parser reads it.
    const outside = files.filter((f) => partOf(f) !== "media" && /&\s*(?:0x1f|31)\b/i.test(readFileSync(join(ROOT, f), "utf8")));
    expect(outside).toEqual([]);
  });
});
