import { createServer } from "node:net";
import { join } from "node:path";
import { LOG_MESSAGES } from "../log-messages.ts";
import type { Logger } from "../logger.ts";
import { NatsServerProcess } from "./nats-server.ts";

export interface EmbeddedNatsOptions {
  /** CAMFLEET_DATA_DIR; the JetStream store goes in `<dataDir>/nats`. */
  dataDir: string;
  /** Client port on 127.0.0.1; 0 = any free port. */
  port: number;
  logger: Logger;
}

/** The port is taken: most often another camfleet or nats-server already runs here. */
export class EmbeddedNatsPortInUseError extends Error {
  override readonly name = "EmbeddedNatsPortInUseError";
  constructor(readonly port: number) {
    super(
      `cannot start the embedded nats-server: 127.0.0.1:${port} is already in use. ` +
        `To use the server on that port set NATS_URL=nats://127.0.0.1:${port}; to run a second one set CAMFLEET_NATS_PORT to a free port.`,
    );
  }
}

/**
 * Starts the nats-server camfleet runs when NATS_URL is unset: JetStream on,
 * loopback only, store under the data dir. The child gets a parent-death
 * signal, so it does not outlive this process even after kill -9.
 */
export async function startEmbeddedNats(options: EmbeddedNatsOptions): Promise<NatsServerProcess> {
  if (options.port !== 0 && !(await portIsFree(options.port))) throw new EmbeddedNatsPortInUseError(options.port);
  const log = options.logger.child({ component: "embedded-nats" });
  const server = new NatsServerProcess({
    name: "camfleet-embedded",
    port: options.port,
    storeDir: join(options.dataDir, "nats"),
    onLog: (line) => log.debug({ line }, "nats-server"),
    onExit: (exit) => log.error({ code: exit.code, signal: exit.signal }, "embedded nats-server exited unexpectedly"),
  });
  await server.start();
  log.info({ url: server.url, storeDir: server.storeDir, pid: server.pid }, LOG_MESSAGES.embeddedNatsReady);
  return server;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen({ host: "127.0.0.1", port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}
