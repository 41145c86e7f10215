import { readFileSync } from "node:fs";
import { Command } from "commander";
import { resolveNats, type NatsFlags } from "./nats-context.ts";
import { cameraActorKind, simKind } from "../actors/index.ts";
// The gateway (fastify, the relay) and the detector (gRPC) are imported by the
// commands that run them: a plain node does not carry them (~30 MB).
import type { DetectorServer } from "../proto/index.ts";
import { assertId, CamfleetError, redact } from "../subjects/index.ts";
import {
  applyStreams,
  ConfigError,
  connectNats,
  describeChanges,
  JetStreamStorageError,
  jetStreamOptions,
  ControlClient,
  LOG_MESSAGES,
  createLogger,
  createRegistry,
  FleetNode,
  KindRegistry,
  loadConfig,
  natsEnvSettings,
  parseSince,
  startAlertConsumer,
  tailEvents,
  type CamfleetEvent,
  type Config,
  type EventType,
  silentLogger,
  toCamfleetError,
  type Logger,
  type NatsConnection,
  type Role,
  type StartAt,
} from "../runtime/index.ts";

/**
 * The `camfleet` command. Services (`up`, `node`, …) run until SIGINT or
 * SIGTERM, then stop what they started and exit 0. Exit codes: 0 ok,
 * 1 failure, 2 bad usage, 78 bad configuration (EX_CONFIG).
 */

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const EXIT_CONFIG = 78;

/** The project's package.json: one folder up from the sources, two from their build in dist/. */
function readPackageJson(): { version: string } {
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      return JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { version: string };
    } catch {
      // try the next one
    }
  }
  return { version: "unknown" };
}

const VERSION = readPackageJson().version;

interface Service {
  stop(): Promise<void>;
}

/** Runs a long-lived service: config, logger, metrics, signals, clean exit. */
async function runService(role: Role, start: (ctx: { config: Config; logger: Logger; signal: AbortSignal }) => Promise<Service>): Promise<void> {
  const config = loadConfigOrExit(role);
  const logger = createLogger({ node: config.nodeId, level: config.logLevel });
  const aborter = new AbortController();
  let service: Service | undefined;
  let firstSignalAt: number | undefined;

  const shutdown = async (reason: string, code: number) => {
    logger.info({ reason }, "shutting down");
    aborter.abort();
    try {
      await service?.stop();
    } catch (err) {
      logger.error({ err }, "clean shutdown failed");
      code = EXIT_FAILURE;
    }
    logger.flush();
    process.exit(code);
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      // A second signal means "now" (children die with us: parent-death signal).
      // One within a second of the first is the same Ctrl-C delivered twice:
      // by the terminal to the process group, and again by npm, which forwards it.
      const now = Date.now();
      if (firstSignalAt !== undefined) {
        if (now - firstSignalAt > 1000) process.exit(130);
        return;
      }
      firstSignalAt = now;
      void shutdown(sig, 0);
    });
  }
  process.on("uncaughtException", (err) => {
    logger.fatal({ err }, "uncaught exception");
    void shutdown("uncaught exception", EXIT_FAILURE);
  });
  process.on("unhandledRejection", (err) => {
    logger.fatal({ err }, "unhandled promise rejection");
    void shutdown("unhandled rejection", EXIT_FAILURE);
  });

  try {
    service = await start({ config, logger, signal: aborter.signal });
  } catch (err) {
    if (aborter.signal.aborted) return; // a signal arrived during start-up; shutdown() exits
    logger.fatal({ err }, `camfleet ${role} failed to start`);
    logger.flush();
    // Streams that do not fit the store are a configuration problem: the operator gets its one line as it is.
    const storage = storageErrorIn(err);
    // A CamfleetError says its code (UNAUTHENTICATED for refused NATS credentials), as the client commands do.
    const message = storage?.message ?? `${err instanceof CamfleetError ? `${err.code}: ` : ""}${err instanceof Error ? err.message : String(err)}`;
    process.stderr.write(`camfleet ${role}: ${message}\n`);
    process.exit(storage !== undefined ? EXIT_CONFIG : EXIT_FAILURE);
  }
}

/** The JetStreamStorageError an error is, or was caused by (set-up steps wrap what they throw). */
function storageErrorIn(err: unknown): JetStreamStorageError | undefined {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof JetStreamStorageError) return e;
  return undefined;
}

function loadConfigOrExit(role: Role): Config {
  try {
    return loadConfig(process.env, role);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`camfleet: invalid configuration: ${problem}\n`);
    process.exit(EXIT_CONFIG);
  }
}

function startNode(ctx: { config: Config; logger: Logger; signal: AbortSignal }, opsServer = true, registry = createRegistry({ node: ctx.config.nodeId })): Promise<FleetNode> {
  return FleetNode.start({
    config: ctx.config,
    logger: ctx.logger,
    registry,
    version: VERSION,
    kinds: new KindRegistry().register(simKind).register(cameraActorKind),
    signal: ctx.signal,
    opsServer,
  });
}

async function runGateway(ctx: { config: Config; logger: Logger; signal: AbortSignal }) {
  const { startGateway } = await import("../gateway/index.ts");
  const detector = await detectorSolutions(ctx.config);
  try {
    const gateway = await startGateway({
      config: ctx.config,
      logger: ctx.logger,
      registry: createRegistry({ node: ctx.config.nodeId }),
      loopbackOnly: ctx.config.webrtcLoopbackOnly,
      signal: ctx.signal,
      detectorSolutions: detector.ask,
    });
    return { ...gateway, stop: () => gateway.stop().finally(detector.close) };
  } catch (err) {
    detector.close();
    throw err;
  }
}

/** Asks the detector at AI_ENDPOINT for its solutions (GET /'s capabilities), with a short deadline. */
async function detectorSolutions(config: Config): Promise<{ ask: () => Promise<string[]>; close: () => void }> {
  const { DetectorClient } = await import("../proto/index.ts");
  const client = new DetectorClient({ endpoint: config.aiEndpoint, ...(config.aiTls !== undefined ? { tls: config.aiTls } : {}) });
  return { ask: async () => (await client.listSolutions({ deadlineMs: 1000 })).solutions, close: () => client.close() };
}

/** The reference detector on DETECTOR_LISTEN; with DETECTOR_OBJECTS (default) also the object model, in its own thread. */
async function startDetector(ctx: { config: Config; logger: Logger }): Promise<DetectorServer> {
  const { ObjectDetector, ReferenceDetector, serveDetector } = await import("../proto/index.ts");
  const log = ctx.logger.child({ component: "detector" });
  const objects = ctx.config.detectorObjects ? new ObjectDetector() : undefined;
  const reference = new ReferenceDetector(objects !== undefined ? { objects } : {});
  let server: DetectorServer;
  try {
    server = await serveDetector(reference, {
      listen: ctx.config.detectorListen,
      ...(ctx.config.detectorTls !== undefined ? { tls: ctx.config.detectorTls } : {}),
      onError: (err, req) => log.error({ err, camera: req.cameraId, frame: req.frameId }, "detector failed on a frame"),
    });
  } catch (err) {
    await objects?.close();
    throw err;
  }
  // The model loads in the background (a second or more); frames that come sooner wait for it.
  objects?.start().catch((err: unknown) => log.error({ err }, "the object model did not load; person_detection and object_detection fail until it does"));
  const { solutions } = reference.listSolutions();
  log.info({ address: server.address, solutions, health: "grpc.health.v1", tls: ctx.config.detectorTls?.paths ?? "off" }, LOG_MESSAGES.detectorListening);
  if (objects === undefined) return server;
  return {
    address: server.address,
    port: server.port,
    setServing: (serving) => server.setServing(serving),
    stop: (graceMs) => server.stop(graceMs).finally(() => objects.close()),
  };
}

/**
 * `up`: the reference detector, embedded NATS and a node that uses it
 * (AI_ENDPOINT defaults to DETECTOR_LISTEN), and the gateway with the relay
 * on HTTP_PORT, which serves the node's metrics too.
 */
async function startUp(ctx: { config: Config; logger: Logger; signal: AbortSignal }): Promise<Service> {
  let detector: DetectorServer | undefined;
  try {
    detector = await startDetector(ctx);
  } catch (err) {
    // Another detector (a real model server, or a second `up`) may hold the port: use whatever answers there.
    ctx.logger.warn({ err, listen: ctx.config.detectorListen }, "could not start the reference detector; cameras use whatever answers at AI_ENDPOINT");
  }
  const registry = createRegistry({ node: ctx.config.nodeId });
  // Cameras publish to this very gateway unless told otherwise, on whatever HTTP_PORT it has.
  const ownWhip = process.env.WHIP_URL === undefined && process.env.MEDIAMTX_WHIP === undefined;
  const host = ctx.config.httpHost === "0.0.0.0" ? "127.0.0.1" : ctx.config.httpHost.includes(":") ? `[${ctx.config.httpHost}]` : ctx.config.httpHost;
  const config: Config = ownWhip && ctx.config.httpPort !== 0 ? { ...ctx.config, whipUrl: `http://${host}:${ctx.config.httpPort}/whip/{camera}` } : { ...ctx.config };
  ctx = { ...ctx, config };
  let node: FleetNode | undefined;
  let asker: Awaited<ReturnType<typeof detectorSolutions>> | undefined;
  try {
    node = await startNode(ctx, false, registry);
    const started = node;
    const { startGateway } = await import("../gateway/index.ts");
    asker = await detectorSolutions(ctx.config);
    const gateway = await startGateway({
      config: ctx.config,
      logger: ctx.logger.child({ role: "gateway" }),
      registry,
      natsServers: started.natsServers,
      loopbackOnly: ctx.config.webrtcLoopbackOnly,
      ensureJetStream: false,
      signal: ctx.signal,
      notReadyReason: () => started.notReadyReason(),
      detectorSolutions: asker.ask,
    });
    // HTTP_PORT=0: the port is known only now; actors read the template when they start publishing.
    if (ownWhip && ctx.config.httpPort === 0) config.whipUrl = `${gateway.url}/whip/{camera}`;
    return {
      stop: async () => {
        // The gateway first: its viewers and publishers end while NATS is still there to hear about it.
        await gateway.stop();
        asker?.close();
        await started.stop();
        await detector?.stop();
      },
    };
  } catch (err) {
    asker?.close();
    await node?.stop();
    await detector?.stop();
    throw err;
  }
}

/** The flags of every command that talks to NATS (the NATS CLI's names). */
interface ClientFlags extends NatsFlags {
  timeout?: string;
}

/** Adds --server, --creds, --context and --timeout; precedence flag > environment > context (cli/nats-context.ts). */
function natsFlags(cmd: Command): Command {
  return cmd
    .option("-s, --server <urls>", "NATS server URLs, comma-separated (default NATS_URL, else the context's, else nats://127.0.0.1:4222)")
    .option("--creds <file>", "NATS user credentials file (default NATS_CREDS, else the context's)")
    .option("--context <name>", "NATS CLI context to use (~/.config/nats/context/<name>.json; default the selected one when neither --server nor NATS_URL is given)")
    .option("--timeout <duration>", "how long to wait for NATS to connect and to answer, e.g. 500ms, 5s (default: connect 3s, answers 5s)");
}

/** `--timeout` as ms: a duration like the NATS CLI's (500ms, 5s, 1m), or plain seconds. */
function parseTimeout(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  const ms = m === null ? NaN : Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "m" ? 60_000 : 1000);
  if (!Number.isFinite(ms) || ms < 1 || ms > 3_600_000) {
    process.stderr.write(`camfleet: --timeout must be a duration from 1ms to 1h, e.g. 500ms, 5s or 1m (got ${JSON.stringify(text)})\n`);
    process.exit(EXIT_USAGE);
  }
  return ms;
}

/** Runs a client command against the cluster; errors become one line on stderr and exit 1. */
async function withClient(flags: ClientFlags, work: (client: ControlClient) => Promise<void>): Promise<void> {
  await withNats(flags, (nc, opts) => work(new ControlClient(nc, opts)));
}

async function withNats(flags: ClientFlags, work: (nc: NatsConnection, opts: { timeoutMs?: number; inboxPrefix?: string }) => Promise<void>): Promise<void> {
  let config: Config;
  let resolved: ReturnType<typeof resolveNats>;
  try {
    resolved = resolveNats(flags, process.env, natsEnvSettings(process.env));
    config = loadConfig(process.env, "client", resolved);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`camfleet: invalid configuration: ${problem}\n`);
    process.exit(EXIT_CONFIG);
  }
  for (const note of resolved.notes) process.stderr.write(`camfleet: ${note}\n`);
  const timeoutMs = flags.timeout !== undefined ? parseTimeout(flags.timeout) : undefined;
  const auth = resolved.tlsFirst === true ? { ...config.natsAuth, tls: { ...config.natsAuth.tls, handshakeFirst: true } } : config.natsAuth;
  const servers = config.natsServers ?? [`nats://127.0.0.1:${config.embeddedNatsPort}`];
  let nc: NatsConnection;
  try {
    // The same connection a node makes, but failing at once: a command should say so, not wait for a server.
    nc = await connectNats({
      servers,
      auth,
      name: "camfleet-cli",
      logger: silentLogger(),
      connectTimeoutMs: timeoutMs ?? 3000,
      ...(resolved.inboxPrefix !== undefined ? { inboxPrefix: resolved.inboxPrefix } : {}),
    });
  } catch (err) {
    if (err instanceof CamfleetError) {
      // Refused (credentials, TLS): say what the server said; no hint to start a server that is there.
      process.stderr.write(`camfleet: ${err.code}: ${err.message}\n`);
    } else {
      process.stderr.write(`camfleet: cannot reach NATS at ${servers.map(redact).join(", ")} (${err instanceof Error ? err.message : String(err)}); set NATS_URL, or start camfleet with \`camfleet up\`\n`);
    }
    process.exit(EXIT_FAILURE);
  }
  try {
    await work(nc, { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(resolved.inboxPrefix !== undefined ? { inboxPrefix: resolved.inboxPrefix } : {}) });
  } catch (err) {
    const storage = storageErrorIn(err);
    if (storage !== undefined) {
      process.stderr.write(`camfleet: ${storage.message}\n`);
      process.exitCode = EXIT_CONFIG;
      return;
    }
    const e = toCamfleetError(err);
    process.stderr.write(`camfleet: ${e.code}: ${e.message}\n`);
    process.exitCode = EXIT_FAILURE;
  } finally {
    await nc.close();
  }
}

function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(json === true ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n");
}

const program = new Command()
  .name("camfleet")
  .description("Video cameras as actors on a NATS cluster.\nConfiguration comes from environment variables: see README.md.")
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride((err) => {
    // commander's own --help / --version exits are successes; usage errors exit 2.
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
  });

program
  .command("up")
  .description("everything on one machine: embedded NATS, a node, the reference detector, and the gateway with the WHIP/WHEP relay on HTTP_PORT (8080)")
  .action(() => runService("up", startUp));

program
  .command("node")
  .description("run a node: hosts camera actors; embedded NATS when NATS_URL is unset; /metrics on HTTP_PORT (9108)")
  .action(() => runService("node", (ctx) => startNode(ctx)));

program
  .command("gateway")
  .description("HTTP gateway with the built-in WHIP/WHEP relay on HTTP_PORT (8080); NATS_URL, default the embedded server of a node on this host: the single worker's REST routes, camera config routes, live events (SSE, WebSocket) and detection history")
  .action(() => runService("gateway", runGateway));
program
  .command("detector")
  .description("the reference gRPC detector (solution: motion) on DETECTOR_LISTEN (127.0.0.1:50051)")
  .action(() => runService("detector", startDetector));

const camera = program.command("camera").description("manage cameras (talks to the cluster at NATS_URL, default nats://127.0.0.1:4222)");
natsFlags(camera.command("add <id> <url>"))
  .description("create or replace a camera")
  .option("--name <name>", "display name")
  .option("--tenant <tenant>", "tenant id", "default")
  .option("--site <site>", "site id", "default")
  .option("--solutions <list>", "comma-separated detector solutions, e.g. motion")
  .option("--ai", "analyse frames with the detector at AI_ENDPOINT (ai.enabled)")
  .option("--ai-fps <n>", "frames per second sent for analysis at most (ai.max_fps; default AI_MAX_FPS)")
  .option("--publish <mode>", "on-demand, always or off", "on-demand")
  .option("--rtsp-transport <tcp|udp>", "RTSP transport", "tcp")
  .option("--transcode", "re-encode a source that is not H.264 (costs CPU; H.264 is always copied)")
  .option("--disabled", "store it without running it")
  .option("--json", "print JSON")
  .action((id: string, url: string, o: ClientFlags & { name?: string; tenant: string; site: string; solutions?: string; ai?: boolean; aiFps?: string; publish: string; rtspTransport: string; transcode?: boolean; disabled?: boolean; json?: boolean }) =>
    withClient(o, async (client) => {
      const spec = {
        id,
        url,
        tenant: o.tenant,
        site: o.site,
        publish: o.publish as "on-demand",
        rtsp_transport: o.rtspTransport as "tcp",
        transcode: o.transcode === true,
        enabled: o.disabled !== true,
        ...(o.name !== undefined ? { name: o.name } : {}),
        ...(o.solutions !== undefined ? { solutions: o.solutions.split(",").filter((x) => x !== "") } : {}),
        // Number() of anything but a number is NaN, which the spec schema refuses with INVALID_ARGUMENT.
        ...(o.ai === true || o.aiFps !== undefined ? { ai: { enabled: o.ai === true, ...(o.aiFps !== undefined ? { max_fps: Number(o.aiFps) } : {}) } } : {}),
      };
      const { camera: saved } = await client.putCamera(spec);
      print(o.json, saved, () => `camera ${saved.id} saved (${saved.enabled ? "enabled" : "disabled"}): ${saved.url}`);
    }),
  );
natsFlags(camera.command("rm <id>"))
  .description("delete a camera")
  .action((id: string, o: ClientFlags) => withClient(o, async (client) => {
    await client.deleteCamera(id);
    process.stdout.write(`camera ${id} deleted\n`);
  }));
natsFlags(camera.command("ls"))
  .description("list cameras with owner and state")
  .option("--tenant <tenant>", "only this tenant")
  .option("--site <site>", "only this site")
  .option("--json", "print JSON")
  .action((o: ClientFlags & { tenant?: string; site?: string; json?: boolean }) =>
    withClient(o, async (client) => {
      const cameras = await client.listAllCameras({ ...(o.tenant !== undefined ? { tenant: o.tenant } : {}), ...(o.site !== undefined ? { site: o.site } : {}) });
      print(o.json, cameras, () =>
        table(
          ["ID", "ENABLED", "OWNER", "STATE", "URL"],
          cameras.map((c) => [c.camera.id, String(c.camera.enabled), c.owner ?? "-", c.state ?? "-", c.camera.url]),
        ),
      );
    }),
  );
natsFlags(camera.command("status <id>"))
  .description("a camera's live status, from the node that runs it")
  .action((id: string, o: ClientFlags) => withClient(o, async (client) => print(true, await client.cameraStatus(id), () => "")));
natsFlags(camera.command("start <id>"))
  .description("enable a camera (creating it when --url is given)")
  .option("--url <url>", "source URL")
  .option("--json", "print JSON")
  .action((id: string, o: ClientFlags & { url?: string; json?: boolean }) =>
    withClient(o, async (client) => {
      const { camera: saved } = await client.startCamera(id, o.url !== undefined ? { url: o.url } : {});
      print(o.json, saved, () => `camera ${saved.id} enabled`);
    }),
  );
natsFlags(camera.command("stop <id>"))
  .description("disable a camera")
  .option("--json", "print JSON")
  .action((id: string, o: ClientFlags & { json?: boolean }) =>
    withClient(o, async (client) => {
      const { camera: saved } = await client.stopCamera(id);
      print(o.json, saved, () => `camera ${saved.id} disabled`);
    }),
  );

natsFlags(program.command("nodes"))
  .description("list live nodes")
  .option("--json", "print JSON")
  .action((o: ClientFlags & { json?: boolean }) =>
    withClient(o, async (client) => {
      const { nodes } = await client.listNodes();
      print(o.json, nodes, () =>
        table(
          ["NODE", "CAMERAS", "CAPACITY", "STATE", "VERSION", "UP SINCE"],
          nodes.map((n) => [n.node, String(n.cameras), String(n.capacity), n.draining === true ? "draining" : "active", n.version, new Date(n.started_ts).toISOString()]),
        ),
      );
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

interface EventsOptions extends ClientFlags {
  tenant?: string;
  site?: string;
  camera?: string;
  type: string;
  since?: string;
  durable?: string;
  follow: boolean;
}

natsFlags(program.command("events"))
  .description("print status and detection events, one JSON line each: new ones as they come, or replayed with --since")
  .option("--tenant <id>", "only this tenant")
  .option("--site <id>", "only this site")
  .option("--camera <id>", "only this camera")
  .option("--type <type>", "status, detection or all", "all")
  .option("--since <time>", "replay from a time (ISO 8601, ms since the epoch) or a duration back (30s, 15m, 2h, 7d); 'all' for everything kept")
  .option("--durable <name>", "read through a durable consumer of this name: a later run goes on where this one stopped (events are acked once printed)")
  .option("--no-follow", "exit once the stored events are printed instead of waiting for new ones")
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
        process.stdout.write(`${JSON.stringify(event)}\n`);
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

await program.parseAsync(process.argv);
