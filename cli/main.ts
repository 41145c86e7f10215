import { readFileSync } from "node:fs";
import { Command } from "commander";
import { simKind } from "../actors/index.ts";
import { ConfigError, createLogger, createRegistry, FleetNode, KindRegistry, loadConfig, type Config, type Logger, type Role } from "../runtime/index.ts";

/**
 * The `camfleet` command. Services (`up`, `node`, …) run until SIGINT or
 * SIGTERM, then stop what they started and exit 0. Exit codes: 0 ok,
 * 1 failure, 2 bad usage, 78 bad configuration (EX_CONFIG).
 */

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const EXIT_CONFIG = 78;

const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

interface Service {
  stop(): Promise<void>;
}

/** Runs a long-lived service: config, logger, metrics, signals, clean exit. */
async function runService(role: Role, start: (ctx: { config: Config; logger: Logger; signal: AbortSignal }) => Promise<Service>): Promise<void> {
  const config = loadConfigOrExit(role);
  const logger = createLogger({ node: config.nodeId, level: config.logLevel });
  const aborter = new AbortController();
  let service: Service | undefined;
  let signals = 0;

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
      signals += 1;
      // A second signal means "now": children die with us (parent-death signal).
      if (signals > 1) process.exit(130);
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
    process.stderr.write(`camfleet ${role}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT_FAILURE);
  }
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

function startNode(ctx: { config: Config; logger: Logger; signal: AbortSignal }): Promise<FleetNode> {
  return FleetNode.start({
    config: ctx.config,
    logger: ctx.logger,
    registry: createRegistry({ node: ctx.config.nodeId }),
    version: VERSION,
    kinds: new KindRegistry().register(simKind),
    signal: ctx.signal,
  });
}

function notBuilt(what: string, issue: string): () => never {
  return () => {
    process.stderr.write(`camfleet ${what}: not built yet (${issue})\n`);
    process.exit(EXIT_FAILURE);
  };
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
  .description("everything on one machine: embedded NATS and a node (the gateway and detector join as they are built)")
  .action(() => runService("up", startNode));

program
  .command("node")
  .description("run a node: hosts camera actors; embedded NATS when NATS_URL is unset; /metrics on HTTP_PORT (9108)")
  .action(() => runService("node", startNode));

program.command("gateway").description("HTTP gateway, WHIP/WHEP relay and dashboard on HTTP_PORT (8080) [not built yet]").action(notBuilt("gateway", "issue 5"));
program.command("detector").description("the reference gRPC detector on DETECTOR_LISTEN [not built yet]").action(notBuilt("detector", "issue 6"));

const camera = program.command("camera").description("manage cameras [not built yet]");
camera.command("add <id> <url>").description("create or replace a camera").action(notBuilt("camera add", "issue 3"));
camera.command("rm <id>").description("delete a camera").action(notBuilt("camera rm", "issue 3"));
camera.command("ls").description("list cameras with owner and state").action(notBuilt("camera ls", "issue 3"));
camera.command("status <id>").description("a camera's live status").action(notBuilt("camera status", "issue 3"));
camera.command("start <id>").description("enable a camera").action(notBuilt("camera start", "issue 3"));
camera.command("stop <id>").description("disable a camera").action(notBuilt("camera stop", "issue 3"));

program.command("nodes").description("list live nodes [not built yet]").action(notBuilt("nodes", "issue 3"));
program
  .command("events")
  .description("tail status and detection events [not built yet]")
  .option("--camera <id>", "only this camera")
  .option("--since <time>", "replay from this time")
  .action(notBuilt("events", "issue 6"));

await program.parseAsync(process.argv);
