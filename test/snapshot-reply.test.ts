// The `camera.<id>.snapshot` reply format on a real nats-server with a small
// max_payload: the JPEG as the body with `Content-Type: image/jpeg`, the JSON
// error otherwise, and PAYLOAD_TOO_LARGE (not a throw inside the responder)
// for a picture the server cannot carry. The picture source is a function
// here; the real camera path is in test/snapshot.test.ts.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { serveCameraSnapshot } from "../runtime/node/control-server.ts";
import { ControlClient, createRegistry, NodeMetrics, silentLogger, superviseSpawn } from "../runtime/index.ts";
import { CamfleetError } from "../subjects/index.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";

const MAX_PAYLOAD = 16 * 1024;

/** nats-server with `max_payload` set (the harness has no option for it); stopped when the test ends. */
async function smallPayloadServer(): Promise<NatsConnection> {
  const dir = await mkdtemp(join(tmpdir(), "camfleet-snap-"));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  const conf = join(dir, "nats.conf");
  await writeFile(conf, `max_payload: ${MAX_PAYLOAD}\n`);
  const port = await reservePort();
  const server = superviseSpawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-c", conf]);
  onTestFinished(async () => void (await server.terminate(2000)));
  const nc = await waitFor(() => connect({ servers: `nats://127.0.0.1:${port}` }), { timeoutMs: 10_000, message: "nats-server up" });
  onTestFinished(() => nc.close());
  return nc;
}

describe("camera.<id>.snapshot replies", () => {
  it("carry the JPEG with its Content-Type, the JSON error otherwise, and PAYLOAD_TOO_LARGE past max_payload", async () => {
    const nc = await smallPayloadServer();
    expect(nc.info?.max_payload).toBe(MAX_PAYLOAD);
    const metrics = new NodeMetrics(createRegistry({ node: "n" }, { processMetrics: false }));
    const widths: Array<number | undefined> = [];
    const sub = serveCameraSnapshot(
      nc,
      "door",
      async (width) => {
        widths.push(width);
        if (width === 64) throw new CamfleetError("UNAVAILABLE", "camera door has no picture yet");
        // A fake JPEG whose size follows the width asked for.
        return Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.alloc(width === undefined ? MAX_PAYLOAD * 2 : width * 10, 7), Buffer.from([0xff, 0xd9])]);
      },
      { logger: silentLogger(), metrics },
    );
    onTestFinished(() => sub.unsubscribe());
    const client = new ControlClient(nc);

    const small = await client.cameraSnapshot("door", 320);
    expect(small.length).toBe(3204);
    expect([small[0], small[1], small[small.length - 1]]).toEqual([0xff, 0xd8, 0xd9]);
    await expect(client.cameraSnapshot("door", 64)).rejects.toMatchObject({ code: "UNAVAILABLE", message: "camera door has no picture yet" });
    // Too large for this server: answered, not thrown away inside the responder.
    await expect(client.cameraSnapshot("door")).rejects.toMatchObject({ code: "PAYLOAD_TOO_LARGE", message: /max_payload 16384.*smaller width/ });
    // The subject's schema, for a caller that skips the client's check.
    const raw = await nc.request("camfleet.ctl.camera.door.snapshot", JSON.stringify({ width: 320, extra: 1 }));
    expect(raw.headers?.get("Content-Type") ?? "").toBe("");
    expect(raw.json()).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
    expect(widths).toEqual([320, 64, undefined]);
    // No responders: nobody runs the camera.
    await expect(client.cameraSnapshot("yard")).rejects.toMatchObject({ code: "NOT_FOUND" });

    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^camfleet_snapshot_requests_total\{outcome="ok",node="n"\} 1$/m);
    expect(text).toMatch(/^camfleet_snapshot_requests_total\{outcome="PAYLOAD_TOO_LARGE",node="n"\} 1$/m);
    expect(text).toMatch(/^camfleet_snapshot_requests_total\{outcome="INVALID_ARGUMENT",node="n"\} 1$/m);
  });
});
