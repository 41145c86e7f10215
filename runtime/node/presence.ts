/**
 * Presence: each node answers on its own subject while it is connected, so
 * another node can tell "gone from the cluster" (a request finds no
 * responder: the server knows of no subscription anywhere on the cluster)
 * from "slow" (a timeout). The reply names the NATS server the node is
 * connected to, which is how a node counts the servers it can reach (the
 * outage proof of docs/architecture.md, "Leases and fencing").
 */
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { subjects } from "../../subjects/index.ts";
import { isNoLeader } from "../infra/index.ts";
import type { Logger } from "../logger.ts";

export type Presence = { state: "present"; server: string | undefined } | { state: "gone" } | { state: "unknown" };

/** Answers presence probes for `node` until unsubscribed. */
export function servePresence(nc: NatsConnection, node: string, logger: Logger): Subscription {
  return nc.subscribe(subjects.ctl.nodePresence(node), {
    callback: (err, msg) => {
      if (err !== null) return;
      try {
        msg.respond(JSON.stringify({ ok: true, node, server: nc.info?.server_id }));
      } catch (e) {
        logger.debug({ err: e }, "presence reply failed");
      }
    },
  });
}

/** Asks `node` whether it is there: "gone" only on a no-responders answer; a timeout or a lost connection is "unknown". */
export async function probePresence(nc: NatsConnection, node: string, timeoutMs: number): Promise<Presence> {
  try {
    const reply = await nc.request(subjects.ctl.nodePresence(node), "", { timeout: timeoutMs });
    const body = reply.json<{ server?: unknown }>();
    return { state: "present", server: typeof body.server === "string" ? body.server : undefined };
  } catch (err) {
    return isNoLeader(err) ? { state: "gone" } : { state: "unknown" };
  }
}
