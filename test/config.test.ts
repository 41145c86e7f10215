import { describe, expect, it } from "vitest";
import { ConfigError, defaultNodeId, describeConfig, loadConfig, whipTemplate, whipUrlFor } from "../runtime/config.ts";

function problemsOf(env: Record<string, string>, role: "node" | "gateway" | "up" = "node"): string[] {
  try {
    loadConfig(env, role);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("configuration", () => {
  it("has the defaults of the contract (docs/contract.md)", () => {
    const node = loadConfig({}, "node");
    expect(node.natsServers).toBeUndefined(); // embedded NATS
    expect(node.httpPort).toBe(9108);
    expect(node.whipUrl).toBe("http://127.0.0.1:8080/whip/{camera}");
    expect(node.aiEndpoint).toBe("127.0.0.1:50051");
    expect(node.detectorListen).toBe("127.0.0.1:50051");
    expect(node.allowLocalSources).toBe(false);
    expect(loadConfig({}, "gateway").httpPort).toBe(8080);
    const up = loadConfig({}, "up");
    expect(up.httpPort).toBe(8080);
    expect(up.allowLocalSources).toBe(true);
  });

  it("points AI_ENDPOINT at DETECTOR_LISTEN unless it is set, and reads the detections stream limits", () => {
    expect(loadConfig({ DETECTOR_LISTEN: "127.0.0.1:6000" }, "up").aiEndpoint).toBe("127.0.0.1:6000");
    expect(loadConfig({ DETECTOR_LISTEN: "127.0.0.1:6000", AI_ENDPOINT: "gpu:50051" }, "up").aiEndpoint).toBe("gpu:50051");
    // Unset limits stay unset: the stream set-up sizes them to the store.
    expect(loadConfig({}, "node").detectionsStream).toEqual({});
    expect(loadConfig({}, "node").statusStream).toEqual({});
    expect(loadConfig({ CAMFLEET_STATUS_MAX_BYTES: "1048576", CAMFLEET_STORAGE: "memory" }, "node")).toMatchObject({ statusStream: { maxBytes: 1_048_576 }, storage: "memory" });
    expect(() => loadConfig({ CAMFLEET_STORAGE: "disk" }, "node")).toThrow(/CAMFLEET_STORAGE must be file or memory \(got "disk"\)/);
    const c = loadConfig({ CAMFLEET_DETECTIONS_MAX_AGE_S: "3600", CAMFLEET_DETECTIONS_MAX_BYTES: "-1", CAMFLEET_DETECTIONS_REPLICAS: "3", CAMFLEET_DETECTIONS_BUFFER: "500" }, "node");
    expect(c.detectionsStream).toEqual({ maxAgeMs: 3_600_000, maxBytes: -1, replicas: 3 });
    expect(c.detectionsBuffer).toBe(500);
    expect(() => loadConfig({ CAMFLEET_DETECTIONS_MAX_AGE_S: "5", CAMFLEET_DETECTIONS_BUFFER: "0" }, "node")).toThrow(/CAMFLEET_DETECTIONS_MAX_AGE_S must be a whole number from 60[\s\S]*CAMFLEET_DETECTIONS_BUFFER must be/);
  });

  it("reads every variable", () => {
    const c = loadConfig(
      {
        NATS_URL: "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
        NODE_ID: "edge-1",
        MAX_CAMERAS: "12",
        HTTP_PORT: "9200",
        WHIP_URL: "http://relay:8889/{camera}/whip",
        AI_ENDPOINT: "detector:50051",
        AI_MAX_FPS: "2.5",
        AI_TIMEOUT_MS: "750",
        LEASE_TTL_MS: "8000",
        LOG_LEVEL: "warn",
        ALLOW_LOCAL_SOURCES: "yes",
        DETECTOR_LISTEN: "0.0.0.0:6000",
        CAMFLEET_API_TOKEN: "s3cret-token",
        CAMFLEET_REPLICAS: "3",
      },
      "node",
    );
    expect(c).toMatchObject({
      natsServers: ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"],
      nodeId: "edge-1",
      maxCameras: 12,
      httpPort: 9200,
      whipUrl: "http://relay:8889/{camera}/whip",
      aiEndpoint: "detector:50051",
      aiMaxFps: 2.5,
      aiTimeoutMs: 750,
      leaseTtlMs: 8000,
      logLevel: "warn",
      allowLocalSources: true,
      detectorListen: "0.0.0.0:6000",
      apiToken: "s3cret-token",
      replicas: 3,
    });
  });

  it("accepts the single-worker names as aliases, the camfleet name winning", () => {
    const c = loadConfig({ WORKER_ID: "worker-7", WORKER_PORT: "8001", MEDIAMTX_WHIP: "http://mtx:8889", AI_PROCESS_EVERY_N: "5" }, "node");
    expect(c.nodeId).toBe("worker-7");
    expect(c.httpPort).toBe(8001);
    expect(c.whipUrl).toBe("http://mtx:8889/camera_{camera}/whip");
    expect(c.aiEveryN).toBe(5);
    expect(loadConfig({ WORKER_ID: "old", NODE_ID: "new" }, "node").nodeId).toBe("new");
  });

  it.each([
    ["MAX_CAMERAS", "abc", /^MAX_CAMERAS must be a whole number from 1 to 10000 \(got "abc"\)$/],
    ["MAX_CAMERAS", "0", /^MAX_CAMERAS must be a whole number from 1 to 10000/],
    ["MAX_CAMERAS", "2.5", /^MAX_CAMERAS must be a whole number/],
    ["HTTP_PORT", "70000", /^HTTP_PORT must be a whole number from 0 to 65535/],
    ["NODE_ID", "my.node", /^NODE_ID must be 1 to 64 characters/],
    ["NATS_URL", "http://x", /^NATS_URL must be a comma-separated list of nats:\/\/host:port URLs/],
    ["AI_ENDPOINT", "localhost", /^AI_ENDPOINT must be host:port/],
    ["AI_MAX_FPS", "0", /^AI_MAX_FPS must be a number greater than 0 and at most 60/],
    ["AI_MAX_FPS", "fast", /^AI_MAX_FPS must be a number/],
    ["LEASE_TTL_MS", "10", /^LEASE_TTL_MS must be a whole number from 1000 to 600000/],
    ["LOG_LEVEL", "loud", /^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent/],
    ["ALLOW_LOCAL_SOURCES", "maybe", /^ALLOW_LOCAL_SOURCES must be one of true, false/],
    ["WHIP_URL", "ftp://x/{camera}", /^WHIP_URL must be an http:\/\/ or https:\/\/ URL/],
    ["WORKER_PORT", "x", /^WORKER_PORT \(alias of HTTP_PORT\) must be a whole number/],
  ])("%s=%j is refused with one line naming it", (name, value, want) => {
    const problems = problemsOf({ [name]: value });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(want);
  });

  it("reports every bad variable, not just the first", () => {
    expect(problemsOf({ MAX_CAMERAS: "x", LOG_LEVEL: "y", HTTP_PORT: "z" })).toHaveLength(3);
  });

  it("never echoes a secret or a credential", () => {
    const [p] = problemsOf({ NATS_URL: "http://user:hunter2@host:4222" });
    expect(p).toContain("NATS_URL");
    expect(p).not.toContain("hunter2");
    const shown = JSON.stringify(describeConfig(loadConfig({ CAMFLEET_API_TOKEN: "tok-123456", NATS_URL: "nats://u:hunter2@h:4222" }, "node")));
    expect(shown).not.toContain("tok-123456");
    expect(shown).not.toContain("hunter2");
  });

  it("builds WHIP URLs from the template", () => {
    expect(whipTemplate("http://relay:8080/whip", undefined)).toBe("http://relay:8080/whip/{camera}");
    expect(whipTemplate("http://relay:8080/whip/", undefined)).toBe("http://relay:8080/whip/{camera}");
    expect(whipTemplate(undefined, "http://mtx:8889/")).toBe("http://mtx:8889/camera_{camera}/whip");
    expect(whipTemplate("http://a/{camera}", "http://mtx:8889")).toBe("http://a/{camera}");
    expect(whipUrlFor("http://mtx:8889/camera_{camera}/whip", "door-1")).toBe("http://mtx:8889/camera_door-1/whip");
  });

  it("derives a valid node id from any host name", () => {
    expect(defaultNodeId("edge-01.example.com")).toBe("edge-01-example-com");
    expect(defaultNodeId("...")).toBe("node");
    expect(defaultNodeId("x".repeat(100))).toHaveLength(64);
  });
});
