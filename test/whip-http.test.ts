// The WHIP client's HTTP (media/whip-http.ts) against a real
// node:http server on 127.0.0.1: redirects, limits, aborts.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { checkRedirect, whipHttp, WhipRedirectError } from "../media/index.ts";

interface Seen {
  method: string;
  path: string;
  body: string;
  contentType: string | undefined;
}

async function server(handle: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<{ origin: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const srv = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (c: string) => (body += c));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", path: req.url ?? "", body, contentType: req.headers["content-type"] });
      handle(req, res, body);
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  onTestFinished(() => new Promise<void>((resolve) => srv.close(() => resolve())));
  onTestFinished(() => srv.closeAllConnections());
  return { origin: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen };
}

describe("WHIP HTTP: credentials on redirects", () => {
  /** A WHIP server that records the Authorization header it was sent. */
  const recording = async (handle: (req: IncomingMessage, res: ServerResponse) => void) => {
    const auth: Array<string | undefined> = [];
    const s = await server((req, res) => {
      auth.push(req.headers.authorization);
      handle(req, res);
    });
    return { ...s, auth };
  };
  const answer = (_req: IncomingMessage, res: ServerResponse) => void res.writeHead(201, { Location: "/s/1" }).end("v=0\r\n");

  it("keeps Authorization on a redirect within the origin, drops it on one to another origin, unless that origin is trusted", async () => {
    const other = await recording(answer);
    const first = await recording((req, res) => {
      if (req.url === "/same") res.writeHead(307, { Location: "/final" }).end();
      else if (req.url === "/away") res.writeHead(307, { Location: `${other.origin}/whip/cam` }).end();
      else answer(req, res);
    });
    const headers = { "Content-Type": "application/sdp", Authorization: "Bearer the-token" };

    expect((await whipHttp(`${first.origin}/same`, { method: "POST", headers, body: "v=0" })).status).toBe(201);
    expect(first.auth).toEqual(["Bearer the-token", "Bearer the-token"]);

    expect((await whipHttp(`${first.origin}/away`, { method: "POST", headers, body: "v=0" })).status).toBe(201);
    expect(other.auth).toEqual([undefined]);

    const asked: string[] = [];
    const trusted = await whipHttp(`${first.origin}/away`, { method: "POST", headers, body: "v=0", trustOrigin: (o) => (asked.push(o), o === other.origin) });
    expect(trusted.status).toBe(201);
    expect(asked).toEqual([other.origin]);
    expect(other.auth).toEqual([undefined, "Bearer the-token"]);
    // The header the caller gave is not changed by a hop.
    expect(headers.Authorization).toBe("Bearer the-token");
  });

  it("refuses a redirect from https to http, and allows http to https", () => {
    expect(() => checkRedirect("https://relay.example/whip/a", "http://relay.example/whip/a")).toThrow(WhipRedirectError);
    expect(() => checkRedirect("https://relay.example/whip/a", "http://relay.example/whip/a")).toThrow(/refused a redirect from https to http/);
    expect(() => checkRedirect("http://relay.example/whip/a", "https://relay.example/whip/a")).not.toThrow();
    expect(() => checkRedirect("https://a.example/x", "https://b.example/x")).not.toThrow();
  });
});

describe("WHIP HTTP", () => {
  it("follows a 307 with method, headers and body kept, and says which URL answered", async () => {
    const { origin, seen } = await server((req, res) => {
      if (req.url === "/whip/cam") {
        res.writeHead(307, { Location: "/elsewhere/whip/cam" }).end();
      } else {
        res.writeHead(201, { Location: "session/1", "Content-Type": "application/sdp" }).end("v=0\r\n");
      }
    });
    const res = await whipHttp(`${origin}/whip/cam`, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: "v=0 offer" });
    expect(res).toMatchObject({ status: 201, url: `${origin}/elsewhere/whip/cam`, body: "v=0\r\n" });
    expect(res.headers.location).toBe("session/1");
    expect(seen).toEqual([
      { method: "POST", path: "/whip/cam", body: "v=0 offer", contentType: "application/sdp" },
      { method: "POST", path: "/elsewhere/whip/cam", body: "v=0 offer", contentType: "application/sdp" },
    ]);
  });

  it("stops following after 5 redirects and returns the last answer; other statuses are returned as they are", async () => {
    const { origin, seen } = await server((req, res) => {
      if (req.url === "/moved") res.writeHead(302, { Location: "/x" }).end();
      else res.writeHead(307, { Location: "/loop" }).end();
    });
    const looped = await whipHttp(`${origin}/loop`, { method: "POST", body: "b" });
    expect(looped.status).toBe(307);
    expect(seen).toHaveLength(6);
    const moved = await whipHttp(`${origin}/moved`, { method: "POST", body: "b" });
    expect(moved.status).toBe(302);
  });

  it("fails on a response body over 1 MiB, on an abort, on a refused connection, and on a scheme it does not speak", async () => {
    const { origin } = await server((req, res) => {
      if (req.url === "/big") res.writeHead(201).end(Buffer.alloc((1 << 20) + 1, 0x61));
      // /slow never answers
    });
    await expect(whipHttp(`${origin}/big`, { method: "POST", body: "" })).rejects.toThrow(/larger than 1048576 bytes/);

    const abort = new AbortController();
    const slow = whipHttp(`${origin}/slow`, { method: "POST", body: "", signal: abort.signal });
    setTimeout(() => abort.abort(), 50);
    await expect(slow).rejects.toMatchObject({ name: "AbortError" });

    // Port 1: nothing listens there.
    await expect(whipHttp("http://127.0.0.1:1/", { method: "DELETE" })).rejects.toMatchObject({ code: "ECONNREFUSED" });

    await expect(whipHttp("ftp://127.0.0.1/x", { method: "POST" })).rejects.toThrow(/unsupported URL scheme ftp:/);
  });
});
