// Whether dist/ holds a build of the current sources. Shared by the build
// script and bin/camfleet.js; plain JavaScript so it runs before any build.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The folders compiled into dist/ (tsconfig.build.json's "include"). */
export const SOURCE_DIRS = ["runtime", "media", "actors", "subjects", "proto", "gateway", "cli"];
export const DIST = join(ROOT, "dist");
/** Written last by a successful build; its mtime is the build's time. */
export const STAMP = join(DIST, ".build-stamp");

/** Newest mtime (ms) of any file under the source folders, package.json and the tsconfigs. */
export function newestSourceMtime() {
  let newest = 0;
  const visit = (path) => {
    let st;
    try {
      st = statSync(path);
    } catch {
      return; // a folder that does not exist (yet)
    }
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const dir of SOURCE_DIRS) visit(join(ROOT, dir));
  for (const file of ["package.json", "tsconfig.json", "tsconfig.build.json"]) visit(join(ROOT, file));
  return newest;
}

/** True when dist/ was built after the last change to any source. */
export function buildIsFresh() {
  try {
    return statSync(STAMP).mtimeMs >= newestSourceMtime();
  } catch {
    return false;
  }
}
