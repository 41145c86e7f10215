// A gateway in the test process: the real startGateway on a free port
// (HTTP_PORT=0), WebRTC on loopback, stopped when the test ends.

import { startGateway, type Gateway, type GatewayOptions } from "../../gateway/index.ts";
import { createRegistry, loadConfig, silentLogger, type Logger } from "../../runtime/index.ts";
import type { RegisterCleanup } from "./nats-harness.ts";

export interface TestGatewayOptions {
  natsUrl: string;
  onCleanup: RegisterCleanup;
  /** Extra environment for loadConfig (e.g. CAMFLEET_API_TOKEN). */
  env?: Record<string, string>;
  /** Default: a random gw-xxxxxx, so gateways of one test never share an id. */
  nodeId?: string;
  logger?: Logger;
  tuning?: GatewayOptions["tuning"];
}

export async function startTestGateway(opts: TestGatewayOptions): Promise<Gateway> {
  const nodeId = opts.nodeId ?? `gw-${Math.random().toString(36).slice(2, 8)}`;
  const config = loadConfig({ NATS_URL: opts.natsUrl, HTTP_PORT: "0", NODE_ID: nodeId, ...opts.env }, "gateway");
  const gw = await startGateway({
    config,
    logger: opts.logger ?? silentLogger(),
    registry: createRegistry({ node: config.nodeId }, { processMetrics: false }),
    loopbackOnly: true,
    ...(opts.tuning !== undefined ? { tuning: opts.tuning } : {}),
  });
  opts.onCleanup(() => gw.stop());
  return gw;
}
