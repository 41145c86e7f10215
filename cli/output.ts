// How commands print: a borderless table (cli-table3) or key/value list for
// people, the same value as JSON for scripts (--json). Colours (picocolors)
// only where stdout is a terminal (cli/colors.ts).

import Table from "cli-table3";
import { pc } from "./colors.ts";

/** Prints `value` as JSON, or the human form `human()` builds from it. */
export function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(json === true ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

/** Borderless, as kubectl prints: each row starts with its first column, so `grep ^id` and `awk '{print $1}'` work. */
const PLAIN = {
  top: "", "top-mid": "", "top-left": "", "top-right": "",
  bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "",
  left: "", "left-mid": "", mid: "", "mid-mid": "",
  right: "", "right-mid": "", middle: "  ",
};

/** A table of rows under `header`; the header names are the JSON field names in upper case. */
export function table(header: string[], rows: string[][]): string {
  const t = new Table({ head: header.map((h) => pc.bold(h)), chars: PLAIN, style: { head: [], border: [], "padding-left": 0, "padding-right": 0 } });
  t.push(...rows);
  // cli-table3 pads the last column too: trailing spaces only get in a reader's way.
  return t.toString().split("\n").map((l) => l.trimEnd()).join("\n");
}

/** Key/value pairs of one object, dotted keys for nested ones (`stream.codec`), as `camera get`/`status` show them. */
export function fields(value: Record<string, unknown>): string {
  const rows: string[][] = [];
  const walk = (prefix: string, v: unknown) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length > 0) {
      for (const [k, child] of Object.entries(v as Record<string, unknown>)) walk(prefix === "" ? k : `${prefix}.${k}`, child);
    } else {
      rows.push([pc.bold(prefix), formatValue(prefix, v)]);
    }
  };
  walk("", value);
  const t = new Table({ chars: PLAIN, style: { head: [], border: [], "padding-left": 0, "padding-right": 0 } });
  t.push(...rows);
  return t.toString().split("\n").map((l) => l.trimEnd()).join("\n");
}

/** A value for people: times (`*_ts`) as ISO dates, lists comma-separated, states coloured. */
export function formatValue(key: string, v: unknown): string {
  if (v === undefined || v === null) return "-";
  if (typeof v === "number" && key.endsWith("_ts")) return new Date(v).toISOString();
  if (Array.isArray(v)) return v.length === 0 ? "-" : v.map(String).join(",");
  if (typeof v === "object") return JSON.stringify(v);
  if (key === "state" || key.endsWith(".state")) return colourState(String(v));
  return String(v);
}

export function colourState(state: string): string {
  switch (state) {
    case "STREAMING":
      return pc.green(state);
    case "CONNECTING":
      return pc.yellow(state);
    case "ERROR":
      return pc.red(state);
    default:
      return pc.dim(state);
  }
}
