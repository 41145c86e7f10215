// TLS on the gRPC detector connection (AI_TLS_*, DETECTOR_TLS_*): a CA, a
// detector certificate for 127.0.0.1 and a client certificate made with
// openssl at test time; the real proto/ server and client over real TLS;
// the config's start-up checks of the PEM files; and a real `camfleet node`
// whose camera reaches a real `camfleet detector` serving mutual TLS.

import { readFileSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { describe, expect, onTestFinished, test } from "vitest";
import { DetectorClient, DetectorError, ReferenceDetector, serveDetector, type DetectorClientTls, type DetectorFrame, type DetectorServerTls } from "../proto/index.ts";
import { ConfigError, describeConfig, loadConfig } from "../runtime/config.ts";
import { ControlClient, LOG_MESSAGES } from "../runtime/index.ts";
import type { CameraStatus } from "../subjects/index.ts";
import { runCamfleet } from "./helpers/camfleet-process.ts";
import { readDetections } from "./helpers/detections.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { makeTlsFiles, secretsDir, type TlsFiles } from "./helpers/nats-secure.ts";
import { reservePort } from "./helpers/ports.ts";
import { waitFor } from "./helpers/wait.ts";
import { rejection as rejectionOf } from "./helpers/rejection.ts";

/** Two independent CAs with their certificates: `other` plays a detector (or client) nobody here trusts. */
async function pki(): Promise<{ dir: string; files: TlsFiles; other: TlsFiles }> {
  const dir = await secretsDir(onTestFinished);
  const otherDir = await secretsDir(onTestFinished);
  const [files, other] = await Promise.all([makeTlsFiles(dir), makeTlsFiles(otherDir)]);
  return { dir, files, other };
}

const pem = (path: string) => readFileSync(path);

async function served(tls: DetectorServerTls) {
  const server = await serveDetector(new ReferenceDetector(), { listen: "127.0.0.1:0", tls });
  onTestFinished(() => server.stop());
  return server;
}

function client(endpoint: string, tls?: DetectorClientTls) {
  // Short backoff: a refused handshake is retried quickly, and each call fails at once meanwhile.
  const c = new DetectorClient({ endpoint, maxReconnectBackoffMs: 200, ...(tls !== undefined ? { tls } : {}) });
  onTestFinished(() => c.close());
  return c;
}

/** A frame that differs from the previous one in a 40×40 square: motion for the reference detector. */
function frame(i: number): DetectorFrame {
  const data = Buffer.alloc(160 * 120, 20);
  const x0 = (i * 30) % 100;
  for (let y = 40; y < 80; y++) data.fill(230, y * 160 + x0, y * 160 + x0 + 40);
  return { data, width: 160, height: 120, format: "gray" };
}

const detect = (c: DetectorClient, i: number) => c.detect({ frame: frame(i), cameraId: "tls-cam", frameId: i, captureTs: Date.now(), solutions: ["motion"] }, { deadlineMs: 3000 });

const rejection = (p: Promise<unknown>) => rejectionOf(p, DetectorError);

describe("detector connection over TLS (DetectorClient ↔ serveDetector)", () => {
  test("server TLS: ListSolutions and Detect work with the CA; a cleartext client and one trusting another CA are refused", async () => {
    const { files, other } = await pki();
    const server = await served({ cert: pem(files.serverCert), key: pem(files.serverKey) });

    const good = client(server.address, { ca: pem(files.ca) });
    expect(await good.listSolutions({ deadlineMs: 3000 })).toEqual({ solutions: ["motion"], model: "camfleet-motion/1" });
    expect((await detect(good, 0)).detections).toEqual([]); // seeds the background
    const moved = await detect(good, 1);
    expect(moved.model).toBe("camfleet-motion/1");
    expect(moved.detections.length).toBeGreaterThan(0);
    expect(moved.detections[0]).toMatchObject({ label: "motion" });

    // Cleartext towards a TLS port: never an answer, UNAVAILABLE (the camera would say DETECTOR_UNAVAILABLE).
    const plain = client(server.address);
    expect((await rejection(plain.listSolutions({ deadlineMs: 3000 }))).code).toBe("UNAVAILABLE");
    expect((await rejection(detect(plain, 2))).code).toBe("UNAVAILABLE");

    // TLS, but the detector's certificate is not signed by the CA this client trusts.
    const stranger = client(server.address, { ca: pem(other.ca) });
    const refused = await rejection(stranger.listSolutions({ deadlineMs: 3000 }));
    expect(refused.code).toBe("UNAVAILABLE");
    expect(refused.message).toContain(server.address);
    expect(refused.message).toMatch(/certificate/); // the handshake's reason reaches the camera's status detail

    // And no fall-back: a TLS client towards a cleartext detector gets nothing either.
    const cleartext = await serveDetector(new ReferenceDetector(), { listen: "127.0.0.1:0" });
    onTestFinished(() => cleartext.stop());
    expect((await rejection(client(cleartext.address, { ca: pem(files.ca) }).listSolutions({ deadlineMs: 3000 }))).code).toBe("UNAVAILABLE");

    // The good client is unaffected by the others' failures.
    expect((await detect(good, 3)).detections.length).toBeGreaterThan(0);
  }, 30_000);

  test("mutual TLS (DETECTOR_TLS_CA): a client without a certificate, or with one from another CA, is refused; one with a signed certificate works", async () => {
    const { files, other } = await pki();
    const server = await served({ cert: pem(files.serverCert), key: pem(files.serverKey), ca: pem(files.ca) });

    const anonymous = client(server.address, { ca: pem(files.ca) });
    const noCert = await rejection(anonymous.listSolutions({ deadlineMs: 3000 }));
    expect(noCert.code).toBe("UNAVAILABLE");
    expect(noCert.message).toMatch(/certificate required/);
    expect((await rejection(detect(anonymous, 0))).code).toBe("UNAVAILABLE");

    const foreign = client(server.address, { ca: pem(files.ca), cert: pem(other.clientCert), key: pem(other.clientKey) });
    expect((await rejection(foreign.listSolutions({ deadlineMs: 3000 }))).code).toBe("UNAVAILABLE");

    const signed = client(server.address, { ca: pem(files.ca), cert: pem(files.clientCert), key: pem(files.clientKey) });
    expect(await signed.listSolutions({ deadlineMs: 3000 })).toEqual({ solutions: ["motion"], model: "camfleet-motion/1" });
    await detect(signed, 0);
    expect((await detect(signed, 1)).detections.length).toBeGreaterThan(0);
  }, 30_000);
});

describe("TLS configuration (AI_TLS_*, DETECTOR_TLS_*)", () => {
  /** The problems of a ConfigError, or fails. */
  function problems(env: Record<string, string>, role: Parameters<typeof loadConfig>[1]): string[] {
    try {
      loadConfig(env, role);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).problems;
    }
    throw new Error("loadConfig accepted the configuration");
  }

  test("files are read at start, by the roles that use them; describeConfig shows paths, never the PEM bytes", async () => {
    const { files } = await pki();
    const env = {
      AI_TLS_CA: files.ca,
      AI_TLS_CERT: files.clientCert,
      AI_TLS_KEY: files.clientKey,
      DETECTOR_TLS_CERT: files.serverCert,
      DETECTOR_TLS_KEY: files.serverKey,
      DETECTOR_TLS_CA: files.ca,
    };
    const up = loadConfig(env, "up");
    expect(up.aiTls?.ca.equals(pem(files.ca))).toBe(true);
    expect(up.aiTls?.key?.equals(pem(files.clientKey))).toBe(true);
    expect(up.detectorTls?.cert.equals(pem(files.serverCert))).toBe(true);
    expect(up.detectorTls?.ca?.equals(pem(files.ca))).toBe(true);
    const logged = JSON.stringify(describeConfig(up));
    expect(logged).not.toContain("PRIVATE KEY");
    expect(logged).not.toContain("BEGIN");
    expect(describeConfig(up)).toMatchObject({
      aiTls: { ca: files.ca, cert: files.clientCert, key: files.clientKey },
      detectorTls: { cert: files.serverCert, key: files.serverKey, ca: files.ca },
    });

    // A node never serves a detector, a detector never calls one: the other side's files are not read.
    expect(loadConfig(env, "node").detectorTls).toBeUndefined();
    expect(loadConfig(env, "detector").aiTls).toBeUndefined();
    expect(loadConfig({ ...env, DETECTOR_TLS_KEY: "/nonexistent/key.pem" }, "node").aiTls).toBeDefined();
    expect(describeConfig(loadConfig({}, "node"))).toMatchObject({ aiTls: "off", detectorTls: "off" });
  });

  test("a missing, unreadable or invalid PEM, a key of another certificate, or half a pair is one line naming the variable and the path", async () => {
    const { dir, files, other } = await pki();
    const garbage = join(dir, "garbage.pem");
    await writeFile(garbage, "not a certificate\n");
    const locked = join(dir, "locked.pem");
    await writeFile(locked, pem(files.ca));
    await chmod(locked, 0o000);
    const rootCanRead = (() => {
      try {
        readFileSync(locked);
        return true;
      } catch {
        return false;
      }
    })();

    expect(problems({ AI_TLS_CA: "/nonexistent/ca.pem" }, "node")).toEqual(['AI_TLS_CA names "/nonexistent/ca.pem", which cannot be read (no such file)']);
    expect(problems({ AI_TLS_CA: dir }, "node")).toEqual([`AI_TLS_CA names ${JSON.stringify(dir)}, which cannot be read (it is a directory)`]);
    if (!rootCanRead) expect(problems({ AI_TLS_CA: locked }, "gateway")).toEqual([`AI_TLS_CA names ${JSON.stringify(locked)}, which cannot be read (permission denied)`]);
    expect(problems({ AI_TLS_CA: garbage }, "node")).toEqual([`AI_TLS_CA names ${JSON.stringify(garbage)}, which is not a PEM certificate`]);
    expect(problems({ AI_TLS_CA: files.ca, AI_TLS_CERT: files.clientCert, AI_TLS_KEY: files.clientCert }, "node")).toEqual([
      `AI_TLS_KEY names ${JSON.stringify(files.clientCert)}, which is not a PEM private key`,
    ]);
    expect(problems({ AI_TLS_CA: files.ca, AI_TLS_CERT: files.clientCert, AI_TLS_KEY: other.clientKey }, "node")).toEqual([
      `AI_TLS_KEY names ${JSON.stringify(other.clientKey)}, which is not the private key of AI_TLS_CERT (${JSON.stringify(files.clientCert)})`,
    ]);
    expect(problems({ AI_TLS_CA: files.ca, AI_TLS_CERT: files.clientCert }, "node")).toEqual(["AI_TLS_CERT is set without its private key (AI_TLS_KEY); a certificate needs both"]);
    expect(problems({ AI_TLS_CERT: files.clientCert, AI_TLS_KEY: files.clientKey }, "node")[0]).toMatch(/^AI_TLS_CERT is set without AI_TLS_CA; set AI_TLS_CA/);
    expect(problems({ AI_TLS_CA: "  " }, "node")).toEqual(['AI_TLS_CA must be the path of a PEM CA file (got "  ")']);

    expect(problems({ DETECTOR_TLS_CERT: files.serverCert }, "detector")).toEqual(["DETECTOR_TLS_CERT is set without its private key (DETECTOR_TLS_KEY); a certificate needs both"]);
    expect(problems({ DETECTOR_TLS_KEY: files.serverKey }, "detector")).toEqual(["DETECTOR_TLS_KEY is set without DETECTOR_TLS_CERT; a certificate needs both"]);
    expect(problems({ DETECTOR_TLS_CA: files.ca }, "detector")[0]).toMatch(/^DETECTOR_TLS_CA is set without DETECTOR_TLS_CERT and DETECTOR_TLS_KEY/);
    expect(problems({ DETECTOR_TLS_CERT: files.serverCert, DETECTOR_TLS_KEY: files.serverKey, DETECTOR_TLS_CA: garbage }, "detector")).toEqual([
      `DETECTOR_TLS_CA names ${JSON.stringify(garbage)}, which is not a PEM certificate`,
    ]);
    // Every problem at once, one line each.
    expect(problems({ AI_TLS_CA: "/nonexistent/ca.pem", DETECTOR_TLS_CERT: garbage, DETECTOR_TLS_KEY: files.serverKey }, "up")).toEqual([
      'AI_TLS_CA names "/nonexistent/ca.pem", which cannot be read (no such file)',
      `DETECTOR_TLS_CERT names ${JSON.stringify(garbage)}, which is not a PEM certificate`,
    ]);
  });

  test("`camfleet up` whose own detector serves TLS needs the client side too (unless AI_ENDPOINT points elsewhere)", async () => {
    const { files } = await pki();
    const server = { DETECTOR_TLS_CERT: files.serverCert, DETECTOR_TLS_KEY: files.serverKey };
    expect(problems(server, "up")[0]).toMatch(/^DETECTOR_TLS_CERT makes the detector of `camfleet up` serve TLS, but AI_TLS_CA is unset/);
    expect(problems({ ...server, DETECTOR_TLS_CA: files.ca, AI_TLS_CA: files.ca }, "up")[0]).toMatch(/^DETECTOR_TLS_CA makes the detector of `camfleet up` require client certificates, but AI_TLS_CERT is unset/);
    expect(loadConfig({ ...server, AI_TLS_CA: files.ca }, "up").aiTls).toBeDefined();
    expect(loadConfig({ ...server, AI_ENDPOINT: "gpu:50051" }, "up").aiTls).toBeUndefined();
  });

  test("`camfleet detector` with a broken DETECTOR_TLS_KEY exits at start with the line, and no key material on its outputs", async () => {
    const { files } = await pki();
    const proc = runCamfleet(["detector"], { env: { DETECTOR_LISTEN: "127.0.0.1:0", DETECTOR_TLS_CERT: files.serverCert, DETECTOR_TLS_KEY: files.serverCert }, onCleanup: onTestFinished });
    const exit = await proc.exited;
    expect(exit.code).not.toBe(0);
    expect(proc.stderr()).toContain(`camfleet: invalid configuration: DETECTOR_TLS_KEY names ${JSON.stringify(files.serverCert)}, which is not a PEM private key`);
    expect(proc.lines.some((l) => l.msg === LOG_MESSAGES.detectorListening)).toBe(false);
  });
});

describe("a camera on a real node reaching a real `camfleet detector` over mutual TLS", () => {
  test("with AI_TLS_*: motion events in JetStream; a node without the client certificate: DETECTOR_UNAVAILABLE, video goes on", async () => {
    const { files } = await pki();
    const port = await reservePort();
    const detector = runCamfleet(["detector"], {
      env: { DETECTOR_LISTEN: `127.0.0.1:${port}`, NODE_ID: "det", DETECTOR_TLS_CERT: files.serverCert, DETECTOR_TLS_KEY: files.serverKey, DETECTOR_TLS_CA: files.ca },
      onCleanup: onTestFinished,
    });
    const listening = await detector.waitForLog((l) => l.msg === LOG_MESSAGES.detectorListening);
    expect(listening.tls).toEqual({ ca: files.ca, cert: files.serverCert, key: files.serverKey });

    const nats = await startNats({ onCleanup: onTestFinished });
    const node = (id: string, tls: Record<string, string>) => {
      const proc = runCamfleet(["node"], {
        env: { NATS_URL: nats.url, NODE_ID: id, HTTP_PORT: "0", CAMFLEET_ACTOR_KIND: "camera", ALLOW_LOCAL_SOURCES: "true", AI_ENDPOINT: `127.0.0.1:${port}`, ...tls },
        onCleanup: onTestFinished,
      });
      return proc.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady).then(() => proc);
    };
    const trusted = await node("tls-node", { AI_TLS_CA: files.ca, AI_TLS_CERT: files.clientCert, AI_TLS_KEY: files.clientKey });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    const control = new ControlClient(nc);
    const waitStatus = (id: string, pred: (s: CameraStatus) => boolean, message: string, timeoutMs = 20_000) =>
      waitFor(async () => {
        const s = await control.cameraStatus(id).catch(() => undefined);
        return s !== undefined && pred(s) ? s : undefined;
      }, { timeoutMs, intervalMs: 100, message });

    // One node first, so the camera surely lands on it.
    await control.putCamera({ id: "secure", url: "testsrc:?size=320x240&rate=10", publish: "off", ai: { enabled: true, max_fps: 5 } });
    const ok = await waitStatus("secure", (s) => s.state === "STREAMING" && s.frames.detections >= 3, "secure: 3 detection events over TLS");
    expect(ok.node).toBe("tls-node");
    expect(ok.error).toBeUndefined();
    const stored = await waitFor(async () => {
      const d = await readDetections(nc, { camera: "secure" });
      return d.length >= 3 ? d : undefined;
    }, { message: "3 detection events stored" });
    expect(stored.every(({ event }) => event.detections.length > 0 && event.detections.every((d) => d.label === "motion"))).toBe(true);
    expect(trusted.lines.some((l) => JSON.stringify(l).includes("PRIVATE KEY"))).toBe(false);
    await trusted.stop();

    // The same camera on a node that trusts the CA but has no client certificate: the detector refuses it.
    await node("anon-node", { AI_TLS_CA: files.ca });
    const refused = await waitStatus("secure", (s) => s.node === "anon-node" && s.error?.code === "DETECTOR_UNAVAILABLE", "secure on anon-node: DETECTOR_UNAVAILABLE", 30_000);
    expect(refused.error?.detail).toMatch(/certificate required/);
    await waitStatus("secure", (s) => s.node === "anon-node" && s.state === "STREAMING" && s.frames.received >= refused.frames.received + 10, "video flows on anon-node");
    const after = await control.cameraStatus("secure");
    expect(after.frames.detections).toBe(0);
  }, 120_000);
});

describe("`camfleet up` with its own detector on mutual TLS", () => {
  test("the gateway's GET / and a camera's analysis both reach the detector over TLS", async () => {
    const { files } = await pki();
    const dataDir = await mkdtemp(join(tmpdir(), "camfleet-up-tls-"));
    onTestFinished(() => rm(dataDir, { recursive: true, force: true }));
    const natsPort = await reservePort();
    const up = runCamfleet(["up"], {
      env: {
        NODE_ID: "up-tls",
        HTTP_PORT: "0",
        CAMFLEET_NATS_PORT: String(natsPort),
        // Not the default 50051: another detector on this machine would be taken for up's own.
        DETECTOR_LISTEN: `127.0.0.1:${await reservePort()}`,
        CAMFLEET_DATA_DIR: dataDir,
        CAMFLEET_ACTOR_KIND: "camera",
        WEBRTC_LOOPBACK_ONLY: "true",
        DETECTOR_TLS_CERT: files.serverCert,
        DETECTOR_TLS_KEY: files.serverKey,
        DETECTOR_TLS_CA: files.ca,
        AI_TLS_CA: files.ca,
        AI_TLS_CERT: files.clientCert,
        AI_TLS_KEY: files.clientKey,
      },
      onCleanup: onTestFinished,
    });
    const listening = await up.waitForLog((l) => l.msg === LOG_MESSAGES.detectorListening, 30_000);
    expect(listening.tls).toEqual({ ca: files.ca, cert: files.serverCert, key: files.serverKey });
    const ready = await up.waitForLog((l) => l.msg === LOG_MESSAGES.gatewayReady, 30_000);
    await up.waitForLog((l) => l.msg === LOG_MESSAGES.nodeReady);

    // GET / names what the detector offers: asked by the gateway, over TLS with the client certificate.
    const info = (await (await fetch(`${ready.url as string}/`)).json()) as { capabilities: { solutions: string[] | null } };
    expect(info.capabilities.solutions).toEqual(["motion", "person_detection", "object_detection"]);

    const nc = await connect({ servers: `nats://127.0.0.1:${natsPort}` });
    onTestFinished(() => nc.close());
    const control = new ControlClient(nc);
    await control.putCamera({ id: "up-secure", url: "testsrc:?size=320x240&rate=10", publish: "off", ai: { enabled: true, max_fps: 5 } });
    const s = await waitFor(async () => {
      const st = await control.cameraStatus("up-secure").catch(() => undefined);
      return st !== undefined && st.frames.detections >= 3 ? st : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100, message: "up-secure: 3 detection events over TLS" });
    expect(s.error).toBeUndefined();
    expect(JSON.stringify(up.lines)).not.toContain("PRIVATE KEY");
  }, 90_000);
});
