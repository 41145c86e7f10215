// What `camfleet up` says once it runs: what is where. A table for a person
// at a terminal; the same fields as one JSON log line for everyone else.

import Table from "cli-table3";
import { pc } from "./colors.ts";

export interface UpInfo {
  /** The gateway's base URL, the dashboard's page. */
  dashboard: string;
  /** WHEP endpoint template of a camera's video ({camera} is its id). */
  whep: string;
  /** Where cameras publish (WHIP), when it is this gateway. */
  whip: string;
  /** NATS servers, credentials redacted. */
  nats: string[];
  /** Prometheus endpoints. */
  metrics: string[];
  /** The detector the cameras use (host:port) and whether it is the reference one started here. */
  detector: string;
  /** Ids of the demo cameras (--demo). */
  demo: string[];
}

export function startScreen(info: UpInfo, version: string): string {
  const t = new Table({ chars: { top: "", "top-mid": "", "top-left": "", "top-right": "", bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "", left: "  ", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "", middle: "  " }, style: { head: [], border: [], "padding-left": 0, "padding-right": 0 } });
  t.push(
    [pc.bold("dashboard"), pc.cyan(info.dashboard)],
    [pc.bold("video (WHEP)"), `POST ${info.whep}`],
    [pc.bold("cameras publish to"), info.whip],
    [pc.bold("NATS"), info.nats.join(", ")],
    [pc.bold("metrics"), info.metrics.join(", ")],
    [pc.bold("detector"), info.detector],
  );
  if (info.demo.length > 0) t.push([pc.bold("demo cameras"), info.demo.join(", ")]);
  const lines = [
    "",
    `${pc.green("●")} ${pc.bold(`camfleet ${version}`)} is up: NATS, a node, the detector and the gateway on this machine`,
    // cli-table3 pads the last column: no trailing spaces on a terminal line.
    t.toString().split("\n").map((l) => l.trimEnd()).join("\n"),
    "",
    `  Try: ${pc.dim("camfleet camera ls")}, ${pc.dim("camfleet events --human")}, ${pc.dim("camfleet nodes --watch")}. Ctrl-C stops everything.`,
    "",
  ];
  return `${lines.join("\n")}\n`;
}
