// CORS: a page on another origin can use the gateway. Preflights and headers
// checked with fetch; and a real Chromium page on one origin (localhost)
// publishing over WHIP to and watching over WHEP from a gateway on another
// (127.0.0.1), reading Location as a WHIP/WHEP client must.

import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { ConfigError, ensureJetStream, loadConfig } from "../runtime/index.ts";
import { BUCKETS, CameraSpecSchema, kvKeys } from "../subjects/index.ts";
import { hasChromium, launchChromium } from "./helpers/chromium.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

const OTHER = "https://player.example";

async function gateway(env: Record<string, string> = {}) {
  const nats = await startNats({ onCleanup: onTestFinished });
  const gw = await startTestGateway({ natsUrl: nats.url, env, onCleanup: onTestFinished });
  return { nats, gw };
}

const preflight = (url: string, origin: string, method = "POST", headers = "content-type,authorization") =>
  fetch(url, { method: "OPTIONS", headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers } });

describe("CORS", () => {
  it("by default any origin may call every route, token or not: preflights pass before auth, Location and ETag are exposed", async () => {
    const { gw } = await gateway({ CAMFLEET_API_TOKEN: "cors-token" });
    const pre = await preflight(`${gw.url}/whep/door`, OTHER);
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("*");
    expect(pre.headers.get("access-control-allow-methods")).toContain("POST");
    expect(pre.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(pre.headers.get("access-control-allow-credentials")).toBeNull();

    const del = await preflight(`${gw.url}/whep/door/abc`, OTHER, "DELETE", "authorization");
    expect(del.status).toBe(204);
    expect(del.headers.get("access-control-allow-methods")).toContain("DELETE");

    // The real request still needs the token, and its answer is readable cross-origin, errors included.
    const anon = await fetch(`${gw.url}/cameras`, { headers: { origin: OTHER } });
    expect(anon.status).toBe(401);
    expect(anon.headers.get("access-control-allow-origin")).toBe("*");
    const authed = await fetch(`${gw.url}/cameras`, {
      method: "POST",
      headers: { origin: OTHER, authorization: "Bearer cors-token", "content-type": "application/json" },
      body: JSON.stringify({ id: "c1", url: "rtsp://10.0.0.1/s" }),
    });
    expect(authed.status).toBe(503); // past auth: no node is up in this test
    expect(authed.headers.get("access-control-allow-origin")).toBe("*");
    const exposed = authed.headers.get("access-control-expose-headers")?.toLowerCase() ?? "";
    for (const h of ["location", "etag", "link"]) expect(exposed).toContain(h);

    // Streams written past fastify (SSE) carry the CORS headers too.
    const ctl = new AbortController();
    const sse = await fetch(`${gw.url}/events?token=cors-token`, { headers: { origin: OTHER }, signal: ctl.signal });
    expect(sse.status).toBe(200);
    expect(sse.headers.get("access-control-allow-origin")).toBe("*");
    ctl.abort();
    await sse.body?.cancel().catch(() => undefined);

    // Any OPTIONS is answered by CORS alone, with nothing in it.
    const plain = await fetch(`${gw.url}/cameras`, { method: "OPTIONS" });
    expect(plain.status).toBe(204);
    expect(await plain.text()).toBe("");
  });

  it("CAMFLEET_CORS_ORIGINS lists the origins allowed; others get no CORS headers; off turns CORS off; bad values are refused", async () => {
    const { gw } = await gateway({ CAMFLEET_CORS_ORIGINS: `${OTHER}, https://ops.example:8443/` });
    const ok = await preflight(`${gw.url}/whep/door`, OTHER);
    expect(ok.headers.get("access-control-allow-origin")).toBe(OTHER);
    expect(ok.headers.get("vary")?.toLowerCase()).toContain("origin");
    expect((await preflight(`${gw.url}/whep/door`, "https://ops.example:8443")).headers.get("access-control-allow-origin")).toBe("https://ops.example:8443");
    const other = await fetch(`${gw.url}/healthz`, { headers: { origin: "https://evil.example" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();

    const { gw: off } = await gateway({ CAMFLEET_CORS_ORIGINS: "off" });
    const none = await preflight(`${off.url}/whep/door`, OTHER);
    expect(none.headers.get("access-control-allow-origin")).toBeNull();
    expect(none.status).toBe(404);

    for (const bad of ["ftp://x.example", "https://x.example/path", "nonsense", ","]) {
      expect(() => loadConfig({ CAMFLEET_CORS_ORIGINS: bad }, "gateway"), bad).toThrow(ConfigError);
    }
    expect(() => loadConfig({ CAMFLEET_CORS_ORIGINS: "ftp://x.example" }, "gateway")).toThrow(/CAMFLEET_CORS_ORIGINS must be "\*", "off" or a comma-separated list of origins/);
  });

  it.skipIf(!hasChromium)("Chromium on another origin publishes over WHIP and watches over WHEP, reading Location; a refused origin cannot", async () => {
    const { nats, gw } = await gateway();
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);
    const cameras = await new Kvm(nc).open(BUCKETS.cameras);
    await cameras.put(kvKeys.camera("webcam"), JSON.stringify(CameraSpecSchema.parse({ id: "webcam", url: "rtsp://127.0.0.1:1/none", publish: "always" })));

    // Same server, other host name: http://localhost:P and http://127.0.0.1:P are different origins.
    const pageOrigin = gw.url.replace("127.0.0.1", "localhost");
    expect(pageOrigin).not.toBe(gw.url);
    const browser = await launchChromium(onTestFinished);
    const publisher = await browser.newPeerPage(pageOrigin);
    expect(await publisher.publish(`${gw.url}/whip/webcam`)).toMatchObject({ status: 201, location: expect.stringContaining("/whip/webcam/") });
    const viewer = await browser.newPeerPage(pageOrigin);
    expect(await viewer.watch(`${gw.url}/whep/webcam`)).toMatchObject({ status: 201, location: expect.stringContaining("/whep/webcam/") });
    await waitFor(async () => ((await viewer.stats())?.framesDecoded ?? 0) > 5, { timeoutMs: 20_000, intervalMs: 100, message: "the cross-origin page decodes" });

    const { gw: strict } = await gateway({ CAMFLEET_CORS_ORIGINS: OTHER });
    const refused = await browser.newPeerPage(strict.url.replace("127.0.0.1", "localhost"));
    await expect(refused.watch(`${strict.url}/whep/webcam`)).rejects.toThrow(/Failed to fetch/);
  });
});
