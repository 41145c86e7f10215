// What tests of `camfleet up` share: a fresh data directory, free ports for
// the embedded NATS and the detector, and a mark in the environment by which
// the test finds every process `up` started (and proves none is left).

import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RegisterCleanup } from "./nats-harness.ts";
import { reservePort } from "./ports.ts";

export interface UpEnv {
  natsPort: number;
  /** `NAME=value` in the environment of `up` and of everything it starts. */
  mark: string;
  env: Record<string, string>;
}

/** The environment of one `camfleet up` under test; the data directory is removed at cleanup. */
export async function upEnv(onCleanup: RegisterCleanup): Promise<UpEnv> {
  const dataDir = await mkdtemp(join(tmpdir(), "camfleet-up-"));
  onCleanup(() => rm(dataDir, { recursive: true, force: true }));
  const natsPort = await reservePort();
  const [markName, markValue] = ["CAMFLEET_TEST_UP", randomUUID()];
  return {
    natsPort,
    mark: `${markName}=${markValue}`,
    env: {
      NODE_ID: "up1",
      HTTP_PORT: "0",
      CAMFLEET_NATS_PORT: String(natsPort),
      // Not the default 50051: another detector on this machine would be taken for up's own.
      DETECTOR_LISTEN: `127.0.0.1:${await reservePort()}`,
      CAMFLEET_DATA_DIR: dataDir,
      WEBRTC_LOOPBACK_ONLY: "true",
      [markName]: markValue,
    },
  };
}

/** Processes (not zombies) whose environment holds `mark`, by command name. */
export async function marked(mark: string): Promise<Array<{ pid: number; comm: string }>> {
  const found: Array<{ pid: number; comm: string }> = [];
  for (const entry of await readdir("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state === "Z" || state === "X") continue;
      if (!(await readFile(`/proc/${pid}/environ`, "utf8")).split("\0").includes(mark)) continue;
      found.push({ pid, comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) });
    } catch {
      // gone while we looked
    }
  }
  return found;
}
