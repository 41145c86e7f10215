import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../runtime/logger.ts";

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter((l) => l !== ""));
      done();
    },
  });
  return { lines, destination };
}

describe("logger", () => {
  it("puts node on every line, and camera on a camera's lines", () => {
    const { lines, destination } = capture();
    const log = createLogger({ node: "n1", destination });
    log.info("hello");
    log.child({ camera: "cam1" }).warn({ attempt: 2 }, "retrying");
    const [a, b] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(a).toMatchObject({ node: "n1", level: "info", msg: "hello" });
    expect(b).toMatchObject({ node: "n1", camera: "cam1", level: "warn", attempt: 2, msg: "retrying" });
  });

  it("never writes credentials: messages, fields, bindings, errors, secret-named fields", () => {
    const { lines, destination } = capture();
    const log = createLogger({ node: "n1", destination });
    const url = "rtsp://admin:hunter2@10.0.0.5/live";
    log.info(`opening ${url}`);
    log.info({ url, nested: { urls: [url] } }, "opening");
    log.child({ source: url }).info("child");
    log.error({ err: new Error(`ffmpeg: ${url}: 401 Unauthorized`, { cause: new Error(`dial ${url}`) }) }, "failed");
    log.info({ token: "tok-abcdef", headers: { authorization: "Bearer tok-abcdef" } }, "request");
    log.info("%s said", url);
    const out = lines.join("\n");
    expect(lines).toHaveLength(6);
    expect(out).not.toContain("hunter2");
    expect(out).not.toContain("tok-abcdef");
    expect(out).toContain("rtsp://***@10.0.0.5/live");
    const err = JSON.parse(lines[3]!) as { err: { message: string; stack: string } };
    expect(err.err.message).toContain("ffmpeg: rtsp://***@10.0.0.5/live: 401 Unauthorized");
    expect(err.err.stack).toContain("dial rtsp://***@10.0.0.5/live");
    expect(JSON.parse(lines[4]!)).toMatchObject({ token: "***", headers: { authorization: "***" } });
  });
});
