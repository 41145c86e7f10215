// Compiles the TypeScript sources into dist/ (tsconfig.build.json) and copies
// the files the code loads at run time (.proto, .html, …) next to them.
// Skips all work when dist/ is already fresh; `--force` rebuilds anyway.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { buildIsFresh, DIST, ROOT, SOURCE_DIRS, STAMP } from "./build-state.mjs";

if (!process.argv.includes("--force") && buildIsFresh()) process.exit(0);

const started = performance.now();
rmSync(DIST, { recursive: true, force: true });
const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
try {
  execFileSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json")], { stdio: "inherit", cwd: ROOT });
} catch {
  console.error("camfleet build: tsc failed (see above); dist/ left empty, so bin/camfleet.js runs the sources through tsx");
  rmSync(DIST, { recursive: true, force: true });
  process.exit(1);
}

let assets = 0;
const copyAssets = (dir) => {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) copyAssets(path);
    else if (!name.endsWith(".ts") && !name.endsWith(".md")) {
      const to = join(DIST, relative(ROOT, path));
      mkdirSync(join(to, ".."), { recursive: true });
      cpSync(path, to);
      assets++;
    }
  }
};
for (const dir of SOURCE_DIRS) copyAssets(join(ROOT, dir));
writeFileSync(STAMP, `${new Date().toISOString()}\n`);
console.error(`camfleet build: dist/ in ${Math.round(performance.now() - started)} ms (${assets} asset files copied)`);
