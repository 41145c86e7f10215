// `camfleet nodes`, `node drain`, `streams apply` and `events`: the cluster's nodes, streams and event feed.

import type { Command } from "commander";
import { pc } from "../colors.ts";
import { assertId, CamfleetError } from "../../subjects/index.ts";
import {
  applyStreams,
  describeChanges,
  jetStreamOptions,
  parseSince,
  startAlertConsumer,
  tailEvents,
  type CamfleetEvent,
  type EventType,
  type StartAt,
} from "../../runtime/index.ts";
import { loadConfigOrExit, natsFlags, parseDuration, withClient, withNats, type ClientFlags } from "../client.ts";
import { colourState, print, table } from "../output.ts";

/** `node` is the command that runs a node; `node drain <id>` is added under it. */
export function clusterCommands(program: Command, node: Command): void {
  natsFlags(program.command("nodes"))
    .description("list live nodes")
    .option("--watch", "keep the list on screen, refreshed every --interval (with --json: one JSON array per refresh, a line each)")
    .option("--interval <duration>", "how often --watch refreshes", "2s")
    .option("--json", "print JSON")
    .action((o: ClientFlags & { json?: boolean; watch?: boolean; interval: string }) => {
      const intervalMs = parseDuration("--interval", o.interval);
      return withClient(o, async (client) => {
        const show = async (watching: boolean) => {
          const { nodes } = await client.listNodes();
          const human = () =>
            table(
              ["NODE", "CAMERAS", "CAPACITY", "STATE", "VERSION", "UP SINCE", "CPU %", "RSS MB"],
              nodes.map((n) => [
                n.node,
                String(n.cameras),
                String(n.capacity),
                n.draining === true ? pc.yellow("draining") : pc.green("active"),
                n.version,
                new Date(n.started_ts).toISOString(),
                n.cpu_percent !== undefined ? n.cpu_percent.toFixed(1) : "-",
                n.rss_bytes !== undefined ? (n.rss_bytes / 1e6).toFixed(0) : "-",
              ]),
            );
          if (!watching) return print(o.json, nodes, human);
          if (o.json === true) return void process.stdout.write(`${JSON.stringify(nodes)}\n`);
          // A terminal gets the table redrawn in place; a pipe gets one table after another, each under its time.
          if (process.stdout.isTTY === true) process.stdout.write("\x1b[H\x1b[2J");
          process.stdout.write(`${pc.dim(`${new Date().toISOString()}  every ${intervalMs / 1000}s, Ctrl-C to stop`)}\n${human()}\n\n`);
        };
        if (o.watch !== true) return show(false);
        const stop = new AbortController();
        for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => stop.abort());
        while (!stop.signal.aborted) {
          await show(true);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, intervalMs);
            stop.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
          });
        }
      });
    });

  natsFlags(node.command("drain <id>"))
    .description("make a node hand all its cameras over to the others and claim no more (as before stopping it); other nodes must have room")
    .option("--json", "print JSON")
    .action((id: string, o: ClientFlags & { json?: boolean }) =>
      withClient(o, async (client) => {
        const result = await client.drainNode(assertId("node", id));
        print(o.json, { node: id, ...result }, () => `node ${id} draining: released ${result.released} camera${result.released === 1 ? "" : "s"}`);
      }),
    );

  const streams = program.command("streams").description("the JetStream streams of the contract (CAMFLEET_STATUS, CAMFLEET_DETECTIONS)");
  natsFlags(streams.command("apply"))
    .description(
      "create missing streams and change existing ones to this configuration: the limits set by CAMFLEET_STATUS_MAX_BYTES, " +
        "CAMFLEET_DETECTIONS_MAX_BYTES, CAMFLEET_DETECTIONS_MAX_AGE_S, CAMFLEET_DETECTIONS_REPLICAS, CAMFLEET_REPLICAS (unset ones stay as they are). " +
        "Nodes and gateways never change an existing stream; this is how an operator does",
    )
    .option("--dry-run", "print what would change and change nothing")
    .option("--json", "print JSON")
    .action((o: ClientFlags & { dryRun?: boolean; json?: boolean }) =>
      withNats(o, async (nc) => {
        const config = loadConfigOrExit("client");
        const dryRun = o.dryRun === true;
        const results = await applyStreams(nc, { ...jetStreamOptions(config), dryRun });
        const verb = { created: dryRun ? "would be created" : "created", updated: dryRun ? "would change" : "changed", unchanged: "unchanged" } as const;
        print(o.json, { dry_run: dryRun, streams: results }, () =>
          results.map((r) => `${r.stream}: ${verb[r.action]}${r.changes.length > 0 ? `: ${describeChanges(r.changes)}` : ""}`).join("\n") + (dryRun ? "\n(dry run: nothing changed)" : ""),
        );
      }),
    );

  natsFlags(program.command("events"))
    .description("print status and detection events, one JSON line each (or one readable line each with --human): new ones as they come, or replayed with --since")
    .option("--tenant <id>", "only this tenant")
    .option("--site <id>", "only this site")
    .option("--camera <id>", "only this camera")
    .option("--type <type>", "status, detection or all", "all")
    .option("--since <time>", "replay from a time (ISO 8601, ms since the epoch) or a duration back (30s, 15m, 2h, 7d); 'all' for everything kept")
    .option("--durable <name>", "read through a durable consumer of this name: a later run goes on where this one stopped (events are acked once printed)")
    .option("--no-follow", "exit once the stored events are printed instead of waiting for new ones")
    .option("--human", "one readable line per event instead of JSON")
    .action((o: EventsOptions) =>
      withNats(o, async (nc) => {
        const types: EventType[] = o.type === "all" ? ["status", "detection"] : o.type === "status" || o.type === "detection" ? [o.type] : [];
        if (types.length === 0) throw new CamfleetError("INVALID_ARGUMENT", `--type must be status, detection or all, got ${JSON.stringify(o.type)}`);
        const start: StartAt = o.since === undefined ? (o.durable !== undefined ? "all" : "new") : o.since === "all" ? "all" : parseSince(o.since);
        const scope = {
          ...(o.tenant !== undefined ? { tenant: assertId("tenant", o.tenant) } : {}),
          ...(o.site !== undefined ? { site: assertId("site", o.site) } : {}),
          ...(o.camera !== undefined ? { camera: assertId("camera", o.camera) } : {}),
        };
        const print = (event: CamfleetEvent) => {
          process.stdout.write(`${o.human === true ? humanEvent(event) : JSON.stringify(event)}\n`);
        };
        const stop = new AbortController();
        for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => stop.abort());
        if (o.durable === undefined) {
          await tailEvents(nc, { types, scope, start, follow: o.follow, onEvent: print, signal: stop.signal });
          return;
        }
        const durable = o.durable;
        await Promise.all(
          types.map(async (type) => {
            let caughtUp!: () => void;
            const done = new Promise<void>((resolve) => (caughtUp = resolve));
            const consumer = await startAlertConsumer<CamfleetEvent>(nc, {
              durable,
              type,
              scope,
              start,
              handler: (event, meta) => {
                print(event);
                if (!o.follow && meta.pending === 0) caughtUp();
              },
            });
            if (!o.follow && consumer.pendingAtStart === 0) caughtUp();
            stop.signal.addEventListener("abort", () => caughtUp(), { once: true });
            await done;
            await consumer.stop();
          }),
        );
      }),
    );
}

interface EventsOptions extends ClientFlags {
  tenant?: string;
  site?: string;
  camera?: string;
  type: string;
  since?: string;
  durable?: string;
  follow: boolean;
  human?: boolean;
}

/**
 * One event as a line for people, the same fields as its JSON:
 *   12:00:01.250  status     door  CONNECTING  node-a  epoch 3
 *   12:00:02.500  detection  door  motion 0.91 [0.10,0.20 0.30x0.40]  frame 17  12 ms
 */
export function humanEvent(e: CamfleetEvent): string {
  const time = new Date(e.ts).toISOString().slice(11, 23);
  if (e.type === "status") {
    const parts = [time, pc.cyan("status   "), e.camera, colourState(e.state), e.node, `epoch ${e.epoch}`];
    if (e.stream !== undefined) parts.push(`${e.stream.codec} ${e.stream.width}x${e.stream.height} @${e.stream.fps}fps`);
    if (e.viewers !== undefined) parts.push(`viewers ${e.viewers}`);
    if (e.error !== undefined) parts.push(pc.red(`${e.error.code}: ${e.error.detail}`), `attempt ${e.error.attempt}, retry in ${(e.error.retry_in_ms / 1000).toFixed(1)}s`);
    if (e.trigger === "periodic") parts.push(pc.dim("(periodic)"));
    return parts.join("  ");
  }
  const found = e.detections.length === 0 ? pc.dim("nothing") : e.detections.map((d) => `${d.label} ${d.score.toFixed(2)} [${d.box.x.toFixed(2)},${d.box.y.toFixed(2)} ${d.box.w.toFixed(2)}x${d.box.h.toFixed(2)}]`).join(", ");
  return [time, pc.magenta("detection"), e.camera, found, `frame ${e.frame_id}`, `${Math.round(e.latency.e2e_ms)} ms`].join("  ");
}
