// Colours for people only: on when stdout is a terminal, never in a pipe or a
// file, whatever the environment (picocolors' own default also turns them on
// whenever CI is set, which puts escape codes into every piped line a CI job
// greps). NO_COLOR (https://no-color.org) turns them off, FORCE_COLOR on.

import picocolors from "picocolors";

function wanted(env: NodeJS.ProcessEnv, isTTY: boolean | undefined): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== "0") return true;
  return isTTY === true;
}

export const pc = picocolors.createColors(wanted(process.env, process.stdout.isTTY));
