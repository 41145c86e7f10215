// Ports a test must name before the process that binds them starts (a server
// restarted on the same port, a cluster's route list, a detector's address).
//
// A port picked with listen(0) and closed again comes from the kernel's
// ephemeral range, the same range every outgoing connection and every other
// listen(0) on the machine draws from: in the gap before our process binds it,
// anyone may take it. So these ports come from below that range, where the
// kernel never hands out a port by itself. The two test workers draw from
// separate blocks (VITEST_POOL_ID), each from a random start, and every port
// is checked free by binding it. What remains is a fixed-port program of
// someone else's; for that the nats harness retries with fresh ports.
//
// Processes that report the port they bound (HTTP_PORT=0, a nats-server
// without a port, gRPC at :0) need none of this and should keep using 0.

import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/** Ports below this are never chosen by the kernel (ip_local_port_range's low end). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > 12_000) return low;
  } catch {
    // not Linux: fall through to the kernel's usual default
  }
  return 32_768;
}

const BLOCKS = 4;
const LOW = ephemeralLow();
const BLOCK_SIZE = Math.floor((LOW - 12_000) / BLOCKS);
// Workers are numbered from 1; anything else (a bench, a script) shares block 0.
const block = (Number(process.env.VITEST_POOL_ID ?? 0) || 0) % BLOCKS;
const base = 12_000 + block * BLOCK_SIZE;
let next = Math.floor(Math.random() * BLOCK_SIZE);
/** Ports handed out by this process; never handed out twice. */
const handed = new Set<number>();

/** A TCP port on 127.0.0.1, free now and outside the kernel's ephemeral range. */
export async function reservePort(): Promise<number> {
  for (let tries = 0; tries < BLOCK_SIZE; tries++) {
    const port = base + (next++ % BLOCK_SIZE);
    if (handed.has(port)) continue;
    if (await canBind(port)) {
      handed.add(port);
      return port;
    }
  }
  throw new Error(`reservePort: no free port in 127.0.0.1:${base}-${base + BLOCK_SIZE - 1}`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ host: "127.0.0.1", port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}
