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

/** The kernel's ephemeral range (ip_local_port_range); Linux's default where it cannot be read. */
function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) return [low!, high!];
  } catch {
    // not Linux
  }
  return [32_768, 60_999];
}

const BLOCKS = 4;
const WANT = 8_000; // ports for all blocks together
const [LOW, HIGH] = ephemeralRange();
// Below the range where there is room (the usual case), else above it.
const REGION_START = LOW - WANT >= 10_000 ? LOW - WANT : HIGH + 1;
const BLOCK_SIZE = Math.floor(Math.min(WANT, 65_536 - REGION_START) / BLOCKS);
if (BLOCK_SIZE < 100) throw new Error(`test/helpers/ports.ts: no room outside the ephemeral range ${LOW}-${HIGH} for test ports`);
// Workers are numbered from 1; anything else (a bench, a script) shares block 0.
const block = (Number(process.env.VITEST_POOL_ID ?? 0) || 0) % BLOCKS;
const base = REGION_START + block * BLOCK_SIZE;
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
