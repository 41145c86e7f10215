// What benchmarks read about processes: CPU ticks from /proc/<pid>/stat, and
// the top self-time functions of a node --cpu-prof profile.
import { readFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** USER_HZ: /proc/<pid>/stat counts CPU time in these ticks per second (getconf CLK_TCK on Linux). */
export const CLK_TCK = 100;

/** The fields of /proc/<pid>/stat after the command name; [0] is the state (field 3). Undefined once the process is gone. */
export function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    return s.slice(s.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** utime + stime in clock ticks; undefined once the process is gone. */
export function cpuTicks(pid: number): number | undefined {
  const f = statFields(pid);
  return f ? Number(f[11]) + Number(f[12]) : undefined;
}

/** A V8 .cpuprofile, the parts read here. */
export interface Profile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/**
 * A markdown table of the `top` functions by self time. With a window (µs on
 * the profile's clock), only samples inside it count, unless none of them is
 * busy (clocks not comparable): then the whole run, and the table says so.
 */
export function topSelf(p: Profile, opts: { from?: number; to?: number; top?: number; label?: string } = {}): string[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const { from, to } = opts;
  let inWindow = from !== undefined && to !== undefined && from >= p.startTime && to <= p.endTime;
  if (inWindow) {
    let t = p.startTime;
    let busy = 0;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas[i] ?? 0;
      if (t >= from! && t <= to! && byId.get(p.samples[i]!)?.callFrame.functionName !== "(idle)") busy++;
    }
    if (busy === 0) inWindow = false;
  }
  const self = new Map<string, number>();
  let t = p.startTime;
  let total = 0;
  let idle = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (inWindow && (t < from! || t > to!)) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    const cf = byId.get(p.samples[i]!)?.callFrame;
    if (!cf) continue;
    if (cf.functionName === "(idle)") {
      idle += dt;
      continue;
    }
    const where = cf.url ? `${cf.url.replace(/^file:\/\/.*?\/(node_modules|gateway|actors|runtime|subjects|proto|cli)\//, "$1/")}:${cf.lineNumber + 1}` : "";
    const key = `${cf.functionName || "(anonymous)"} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  const span = inWindow
    ? `steady window of ${((to! - from!) / 1e6).toFixed(1)} s`
    : `whole run of ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s${from !== undefined ? " (no busy sample within the steady window)" : ""}`;
  const lines = [`${opts.label ?? "profile"}: ${span}; busy ${(total / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms`, "", "| # | self ms | % of busy | function |", "|---|---|---|---|"];
  [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, opts.top ?? 10)
    .forEach(([k, v], i) => lines.push(`| ${i + 1} | ${(v / 1000).toFixed(0)} | ${((v / total) * 100).toFixed(1)} | ${k} |`));
  return lines;
}

/**
 * The busiest .cpuprofile in `dir` (most non-idle samples), or undefined when
 * none was written. Under tsx, its loader thread writes a profile of its own:
 * the busiest one is the main thread's.
 */
export async function busiestProfile(dir: string): Promise<Profile | undefined> {
  let best: Profile | undefined;
  let bestBusy = -1;
  for (const f of (await readdir(dir)).filter((name) => name.endsWith(".cpuprofile"))) {
    const p = JSON.parse(await readFile(join(dir, f), "utf8")) as Profile;
    const idle = new Set(p.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
    const busy = p.samples.filter((id) => !idle.has(id)).length;
    if (busy > bestBusy) [best, bestBusy] = [p, busy];
  }
  return best;
}
