import { readFileSync } from "node:fs";
import { Command } from "commander";
import { cameraActorKind, simKind } from "../actors/index.ts";
import { EXIT_CONFIG, EXIT_FAILURE, EXIT_USAGE, loadConfigOrExit, storageErrorIn } from "./client.ts";
import { cameraCommands } from "./commands/camera.ts";
import { clusterCommands } from "./commands/cluster.ts";
import { completionCommand } from "./commands/completion.ts";
import { addDemoCameras } from "./demo.ts";
import { startScreen, type UpInfo } from "./start-screen.ts";
// The gateway (fastify, the relay) and the detector (gRPC) are imported by the
// commands that run them: a plain node does not carry them (~30 MB).
import type { DetectorServer } from "../proto/index.ts";
import { CamfleetError, redact } from "../subjects/index.ts";
import { connectNats, LOG_MESSAGES, createLogger, createRegistry, FleetNode, KindRegistry, type Config, type Logger, type Role } from "../runtime/index.ts";

/**
 * The `camfleet` command. Services (`up`, `node`, …) run until SIGINT or
 * SIGTERM, then stop what they started and exit 0. Exit codes: cli/client.ts.
 * The client commands are in cli/commands/.
 */

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
  const logger = createLogger({ node: config.nodeId, level: config.logLevel, format: prettyOutput(config) ? "pretty" : "json" });
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
        if (now - firstSignalAt > 1000) {
          // Said on stderr (not through the logger, which may be mid-flush) so an operator sees why it was not clean.
          process.stderr.write(`camfleet ${role}: second ${sig} ${now - firstSignalAt} ms after the first: exiting now\n`);
          process.exit(130);
        }
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

/** LOG_FORMAT=auto: readable lines for a person at a terminal, JSON lines for whatever reads a pipe or file. */
function prettyOutput(config: Config): boolean {
  return config.logFormat === "pretty" || (config.logFormat === "auto" && process.stdout.isTTY === true);
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
  // The model (a worker thread, ~150 MB, 1–3 s of CPU to load) loads on the
  // first frame that asks for person_detection or object_detection: a fleet
  // that runs only motion never pays for it.
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
async function startUp(ctx: { config: Config; logger: Logger; signal: AbortSignal }, opts: { demo: boolean }): Promise<Service> {
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
    const demo = opts.demo ? await startDemo(ctx, started.natsServers) : undefined;
    const info: UpInfo = {
      dashboard: `${gateway.url}/`,
      whep: `${gateway.url}/whep/{camera}`,
      whip: config.whipUrl ?? "-",
      nats: started.natsServers.map(redact),
      metrics: [`${gateway.url}/metrics`],
      detector: detector !== undefined ? `${detector.address} (reference detector: motion)` : `${ctx.config.aiEndpoint} (AI_ENDPOINT)`,
      demo: demo?.ids ?? [],
    };
    ctx.logger.info(info, LOG_MESSAGES.upReady);
    if (prettyOutput(ctx.config)) process.stdout.write(startScreen(info, VERSION));
    return {
      stop: async () => {
        // The demo cameras go first, while the node is there to stop their FFmpeg.
        await demo?.stop();
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

/** `up --demo`: the demo cameras, over a connection of their own that `stop` closes after removing them. */
async function startDemo(ctx: { config: Config; logger: Logger }, servers: string[]): Promise<{ ids: string[]; stop: () => Promise<void> }> {
  // The embedded server has no users; a NATS_URL given to `up` has the configured credentials.
  const nc = await connectNats({ servers, ...(ctx.config.natsServers !== undefined ? { auth: ctx.config.natsAuth } : {}), name: "camfleet-up-demo", logger: ctx.logger, connectTimeoutMs: 3000 });
  try {
    const demo = await addDemoCameras(nc, ctx.logger.child({ component: "demo" }));
    return { ids: demo.ids, stop: () => demo.remove().finally(() => nc.close()) };
  } catch (err) {
    await nc.close();
    throw err;
  }
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
  .option("--demo", "add synthetic cameras (FFmpeg test sources; one moving, with motion detections), removed again on stop")
  .action((o: { demo?: boolean }) => runService("up", (ctx) => startUp(ctx, { demo: o.demo === true })));

const nodeCommand = program
  .command("node")
  .description("run a node: hosts camera actors; embedded NATS when NATS_URL is unset; /metrics on HTTP_PORT (9108). `node drain <id>` drains one")
  .action(() => runService("node", (ctx) => startNode(ctx)));

program
  .command("gateway")
  .description("HTTP gateway with the built-in WHIP/WHEP relay on HTTP_PORT (8080); NATS_URL, default the embedded server of a node on this host: the single worker's REST routes, camera config routes, live events (SSE, WebSocket) and detection history")
  .action(() => runService("gateway", runGateway));
program
  .command("detector")
  .description("the reference gRPC detector (solution: motion) on DETECTOR_LISTEN (127.0.0.1:50051)")
  .action(() => runService("detector", startDetector));

cameraCommands(program);
clusterCommands(program, nodeCommand);
completionCommand(program);

await program.parseAsync(process.argv);
