// ControlClient against a real nats-server, with small responders subscribed
// here in place of the node's control service.

import { connect, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { expect, onTestFinished, test } from "vitest";
import { ControlClient } from "../runtime/client/control-client.ts";
import { CamfleetError, CONTROL_QUEUE, PREFIX, subjects, type CameraStatus } from "../subjects/index.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";
import { rejection as rejectionOf } from "./helpers/rejection.ts";

const STATUS: CameraStatus = {
  camera: "cam-1",
  node: "n1",
  epoch: 7,
  state: "STREAMING",
  since_ts: 1_700_000_000_000,
  frames: { received: 10, sent_ai: 2, skipped_motion: 1, detections: 0 },
  publishing: true,
  viewers: 1,
};

/** A server, a connection for the client and one for the responders; all closed after the test. */
async function setup(): Promise<{ client: NatsConnection; server: NatsConnection }> {
  const nats = await startNats({ onCleanup: onTestFinished });
  const open = async (name: string) => {
    const nc = await connect({ servers: nats.url, name });
    onTestFinished(async () => {
      if (!nc.isClosed()) await nc.close();
    });
    return nc;
  };
  return { client: await open("control-client-test"), server: await open("control-responder-test") };
}

/** Subscribes a responder (in the control queue group, as nodes do) and waits until the server knows it. */
async function respond(nc: NatsConnection, subject: string, answer: (m: Msg) => unknown): Promise<void> {
  nc.subscribe(subject, {
    queue: CONTROL_QUEUE,
    callback: (_err, m) => {
      const body = answer(m);
      if (body !== undefined) m.respond(typeof body === "string" ? body : JSON.stringify(body));
    },
  });
  await nc.flush();
}

const rejection = (p: Promise<unknown>) => rejectionOf(p, CamfleetError);

test("an ok reply is parsed and returned without `ok`", async () => {
  const { client, server } = await setup();
  await respond(server, subjects.ctl.cameraStatus("cam-1"), () => ({ ok: true, ...STATUS }));
  await respond(server, subjects.ctl.camerasPut, (m) => ({ ok: true, camera: m.json() }));
  const ctl = new ControlClient(client);

  expect(await ctl.cameraStatus("cam-1")).toEqual(STATUS);
  // The spec goes out as given (the answering node fills the defaults); the reply is the parsed spec.
  const { camera } = await ctl.putCamera({ id: "cam-1", url: "rtsp://10.0.0.5/live" });
  expect(camera).toMatchObject({ id: "cam-1", url: "rtsp://10.0.0.5/live", tenant: "default", site: "default", enabled: true });
});

test("an {ok:false} reply throws a CamfleetError with its code and message", async () => {
  const { client, server } = await setup();
  await respond(server, subjects.ctl.camerasGet, () => ({ ok: false, error: { code: "NOT_FOUND", message: "no camera cam-9" } }));
  const err = await rejection(new ControlClient(client).getCamera("cam-9"));
  expect(err.code).toBe("NOT_FOUND");
  expect(err.message).toBe("no camera cam-9");
});

test("a reply of the wrong shape, or not JSON, is INTERNAL", async () => {
  const { client, server } = await setup();
  await respond(server, subjects.ctl.nodesList, () => ({ ok: true, nodes: "none" }));
  await respond(server, subjects.ctl.camerasList, () => "<html>");
  const ctl = new ControlClient(client);

  const wrongShape = await rejection(ctl.listNodes());
  expect(wrongShape.code).toBe("INTERNAL");
  expect(wrongShape.message).toContain(subjects.ctl.nodesList);
  expect(wrongShape.message).toContain("nodes");
  expect((await rejection(ctl.listCameras())).code).toBe("INTERNAL");
});

// "At once" means well before the 5000 ms request timeout these tests set, with
// room for a loaded machine: half of it.
const AT_ONCE_MS = 2500;

test("no responder on a queue-group subject is UNAVAILABLE at once, not at the timeout", async () => {
  const { client } = await setup();
  const ctl = new ControlClient(client, { timeoutMs: 5000 });
  const t0 = performance.now();
  const err = await rejection(ctl.listNodes());
  expect(performance.now() - t0).toBeLessThan(AT_ONCE_MS);
  expect(err.code).toBe("UNAVAILABLE");
  expect(err.message).toBe(`no camfleet node is serving ${subjects.ctl.nodesList}`);
});

test("no responder on camera.<id>.status is NOT_FOUND (not running anywhere); on node.<id>.drain, no live node", async () => {
  const { client } = await setup();
  const ctl = new ControlClient(client, { timeoutMs: 5000 });
  const t0 = performance.now();
  const status = await rejection(ctl.cameraStatus("cam-1"));
  expect(status.code).toBe("NOT_FOUND");
  expect(status.message).toBe("camera cam-1 is not running on any node");
  const drain = await rejection(ctl.drainNode("n7"));
  expect(drain.code).toBe("NOT_FOUND");
  expect(drain.message).toBe("no live node n7");
  expect(performance.now() - t0).toBeLessThan(AT_ONCE_MS);
});

test("a responder that never answers: UNAVAILABLE at the deadline", async () => {
  const { client, server } = await setup();
  let seen = 0;
  await respond(server, subjects.ctl.cameraStop("cam-1"), () => {
    seen++;
    return undefined;
  });
  const ctl = new ControlClient(client, { timeoutMs: 300 });
  const t0 = performance.now();
  const err = await rejection(ctl.stopCamera("cam-1"));
  const took = performance.now() - t0;
  expect(seen).toBe(1);
  expect(err.code).toBe("UNAVAILABLE");
  expect(err.message).toBe(`no reply from camfleet within 300 ms on ${subjects.ctl.cameraStop("cam-1")}`);
  expect(took).toBeGreaterThanOrEqual(290);
  expect(took).toBeLessThan(AT_ONCE_MS); // the 300 ms deadline, not the default 5000 ms one
});

test("a bad id or spec is INVALID_ARGUMENT and nothing is published", async () => {
  const { client, server } = await setup();
  const seen: string[] = [];
  server.subscribe(`${PREFIX}.>`, {
    callback: (_err, m) => {
      seen.push(m.subject);
    },
  });
  await respond(server, subjects.ctl.nodesList, () => ({ ok: true, nodes: [] }));
  const ctl = new ControlClient(client);

  const calls: Array<() => Promise<unknown>> = [
    () => ctl.getCamera("a.b"),
    () => ctl.deleteCamera("a.b"),
    () => ctl.startCamera("a.b", { url: "rtsp://10.0.0.5/live" }),
    () => ctl.stopCamera("a.b"),
    () => ctl.cameraStatus("a.b"),
    () => ctl.drainNode("a.b"),
    () => ctl.cameraStatus("*"),
    () => ctl.cameraStatus(""),
    () => ctl.listCameras({ tenant: "a>" }),
    () => ctl.putCamera({ id: "a.b", url: "rtsp://10.0.0.5/live" }),
    () => ctl.putCamera({ id: "cam-1", url: "ftp://10.0.0.5/live" }),
    () => ctl.startCamera("cam-1", { url: "not a url" }),
  ];
  for (const call of calls) expect((await rejection(call())).code).toBe("INVALID_ARGUMENT");

  // One good request after the bad ones: the watcher sees it, so it would have seen any earlier publish.
  expect(await ctl.listNodes()).toEqual({ nodes: [] });
  await waitFor(() => seen.length > 0, { message: "the watcher saw the good request" });
  expect(seen).toEqual([subjects.ctl.nodesList]);
});

test("many concurrent requests each get their own reply", async () => {
  const { client, server } = await setup();
  const N = 200;
  // Hold every request until all have arrived, then answer in reverse order.
  const held: Msg[] = [];
  await respond(server, subjects.ctl.camerasGet, (m) => {
    held.push(m);
    if (held.length === N) {
      for (const h of held.reverse()) {
        const { id } = h.json<{ id: string }>();
        h.respond(JSON.stringify({ ok: true, camera: { id, url: `rtsp://10.0.0.5/${id}` } }));
      }
    }
    return undefined;
  });
  const ctl = new ControlClient(client);
  const ids = Array.from({ length: N }, (_, i) => `cam-${i}`);
  const replies = await Promise.all(ids.map((id) => ctl.getCamera(id)));
  expect(replies.map((r) => r.camera.id)).toEqual(ids);
  expect(replies.map((r) => r.camera.url)).toEqual(ids.map((id) => `rtsp://10.0.0.5/${id}`));
});

test("a closed connection fails waiting and later requests with UNAVAILABLE", async () => {
  const { client, server } = await setup();
  await respond(server, subjects.ctl.cameraStop("cam-1"), () => undefined);
  const ctl = new ControlClient(client, { timeoutMs: 5000 });
  const waiting = rejection(ctl.stopCamera("cam-1"));
  await client.flush();
  const t0 = performance.now();
  await client.close();
  const err = await waiting;
  expect(err.code).toBe("UNAVAILABLE");
  expect(performance.now() - t0).toBeLessThan(AT_ONCE_MS);
  expect((await rejection(ctl.listNodes())).code).toBe("UNAVAILABLE");
});
