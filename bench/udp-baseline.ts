// The relay benchmark's baseline, in its own process: plain UDP instead of WebRTC.
//   forward <listen-port-file> <dest-port>...   receive on a free port, send each packet to every dest
//   sink <count>                                 <count> sockets; prints {"ports": [...]} then a line per
//                                                second with packets and latency samples (µs; payload
//                                                bytes 14..21 = sender's process.hrtime.bigint(): the
//                                                12-byte RTP header, FU-A indicator and header come first)
import { createSocket } from "node:dgram";

const [mode, ...args] = process.argv.slice(2);
const HOST = "127.0.0.1";

if (mode === "forward") {
  const dests = args.map(Number);
  const rx = createSocket("udp4");
  const tx = createSocket("udp4");
  rx.on("message", (msg) => {
    for (const port of dests) tx.send(msg, port, HOST);
  });
  rx.bind(0, HOST, () => process.stdout.write(`${JSON.stringify({ port: rx.address().port })}\n`));
} else if (mode === "sink") {
  const count = Number(args[0] ?? "1");
  let packets = 0;
  let samples: number[] = [];
  const ports: number[] = [];
  for (let i = 0; i < count; i++) {
    const s = createSocket("udp4");
    s.on("message", (msg) => {
      packets++;
      if (msg.length >= 22) samples.push(Number(process.hrtime.bigint() - msg.readBigUInt64BE(14)) / 1000);
    });
    await new Promise<void>((r) => s.bind(0, HOST, () => r()));
    ports.push(s.address().port);
  }
  process.stdout.write(`${JSON.stringify({ ports })}\n`);
  setInterval(() => {
    process.stdout.write(`${JSON.stringify({ packets, latencyUs: samples })}\n`);
    samples = [];
  }, 1000);
} else {
  process.stderr.write("usage: udp-baseline.ts forward <dest-port>... | sink <count>\n");
  process.exit(2);
}
process.on("SIGTERM", () => process.exit(0));
