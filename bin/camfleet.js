#!/usr/bin/env node
// Entry point. Runs the compiled build in dist/ when it is fresh (`npm run
// build`; `npm start` and `npm test` build first). Otherwise — a checkout
// edited since the last build — it runs the TypeScript sources through tsx,
// which is correct but costs a loader thread and ~20 MB more memory.
import { buildIsFresh } from "../scripts/build-state.mjs";

if (buildIsFresh()) {
  await import("../dist/cli/main.js");
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../cli/main.ts");
}
