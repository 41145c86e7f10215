// A TCP proxy a test can sever: a node's NATS_URL points at proxies instead of
// the servers, so "cut the node off NATS" is closing its proxies, without
// touching the servers or the other nodes. While severed, the proxy still
// listens (the port stays ours) but drops every connection at once, like a
// firewall that answers with a reset; restore() lets connections through again.

import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { RegisterCleanup } from "../nats-harness.ts";

export interface TcpProxy {
  /** nats://127.0.0.1:PORT of the proxy. */
  readonly url: string;
  readonly port: number;
  readonly severed: boolean;
  /** Drops every open connection and refuses new ones until restore(). */
  sever(): void;
  restore(): void;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 (a free port) and forwards each connection to 127.0.0.1:`targetPort`. */
export async function startTcpProxy(targetPort: number, onCleanup: RegisterCleanup): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let severed = false;
  const server: Server = createServer((client) => {
    if (severed) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: "127.0.0.1", port: targetPort });
    open.add(client);
    open.add(upstream);
    // One side gone means the other goes too: the client must see a dead server
    // as a closed connection, so it reconnects elsewhere.
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of open) s.destroy();
      open.clear();
      server.close(() => resolve());
    });
  onCleanup(close);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    get severed() {
      return severed;
    },
    sever() {
      severed = true;
      for (const s of open) s.destroy();
      open.clear();
    },
    restore() {
      severed = false;
    },
    close,
  };
}
