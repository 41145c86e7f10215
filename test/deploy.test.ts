// deploy/ checked without a Docker engine or a Kubernetes cluster (there is
// neither here; deploy/README.md says what was checked how):
// - every YAML and JSON file parses;
// - every environment variable that compose, the Kubernetes manifests, the
//   Dockerfile or the systemd units give a camfleet process is one
//   runtime/config.ts accepts, and their values pass its validation; the
//   NATS servers get exactly the variables deploy/nats/accounts.conf reads;
// - every metric a Grafana panel or an alert rule queries is exported by a
//   real node (with a real camera from the RTSP helper, so the per-camera
//   series exist) or a real gateway, scraped here;
// - the compose files are valid Compose (the spec's JSON Schema), and their
//   services and host ports are the ones the README lists;
// - the image's file set (the Dockerfile's COPY lines) runs without the
//   TypeScript sources.

import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect } from "@nats-io/transport-node";
import { Ajv } from "ajv";
import { describe, expect, it, onTestFinished } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { CONFIG_VARIABLES, ConfigError, ControlClient, LOG_MESSAGES, loadConfig, superviseSpawn, type Role } from "../runtime/index.ts";
import { startFleetNode } from "./helpers/fleet.ts";
import { startTestGateway } from "./helpers/gateway.ts";
import { startNats } from "./helpers/nats-harness.ts";
import { startRtspCamera } from "./helpers/rtsp-camera.ts";
import { waitFor } from "./helpers/wait.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEPLOY = join(ROOT, "deploy");
const run = promisify(execFile);

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out.sort();
}

const read = (path: string) => readFile(join(DEPLOY, path), "utf8");
/** Compose files use merge keys (`<<: *anchor`); Kubernetes and the rest do not, and parse the same with it. */
const yamlOf = async (path: string): Promise<Doc> => parseYaml(await read(path), { merge: true, uniqueKeys: true }) as Doc;
const yamlDocsOf = async (path: string): Promise<Doc[]> => parseAllDocuments(await read(path), { merge: true }).map((d) => d.toJS() as Doc);

const ACCEPTED = new Set(CONFIG_VARIABLES.flatMap((v) => [v.name, ...(v.alias !== undefined ? [v.alias] : [])]));
/** Variables naming files the config reads at start: their paths only exist in the container or on the host. */
const FILE_VARS = new Set(["NATS_CA", "NATS_CERT", "NATS_KEY", "NATS_NKEY", "NATS_CREDS", "AI_TLS_CA", "AI_TLS_CERT", "AI_TLS_KEY", "DETECTOR_TLS_CERT", "DETECTOR_TLS_KEY", "DETECTOR_TLS_CA"]);

/** The command a camfleet container runs → the config role it loads. */
function roleOf(command: string): Role {
  if (command === "node" || command === "gateway" || command === "detector" || command === "up") return command;
  return "client"; // streams apply, camera …, nodes
}

/**
 * Runs a deploy file's environment through loadConfig, as the process would
 * at start: compose's `${VAR:?…}` and Kubernetes' Secret references become
 * a placeholder, file paths are left out (they exist only where deployed).
 */
function expectValidConfig(where: string, env: Record<string, string>, role: Role): void {
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (FILE_VARS.has(name)) continue;
    values[name] = value
      .replace(/\$\{[A-Z_]+:-([^}]*)\}/g, "$1") // compose's ${VAR:-default}: the default
      .replace(/\$\{[^}]*\}/g, "placeholder-1").replace(/\$\(([A-Z_]+)\)/g, (_, ref: string) => env[ref] ?? "10.0.0.1");
  }
  try {
    loadConfig(values, role);
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`${where}: ${err.problems.join("; ")}`);
    throw err;
  }
}

/** The `$NAME`s a nats-server config reads from the environment. */
async function natsConfigVariables(): Promise<Set<string>> {
  // Comments and quoted subjects ("$JS.API.…") are not variables.
  const text = (await read("nats/accounts.conf")).replace(/#.*$/gm, "").replace(/"[^"]*"/g, '""');
  const defined = new Set([...text.matchAll(/^([A-Z_]+)\s*=/gm)].map((m) => m[1]!));
  return new Set([...text.matchAll(/\$([A-Z_]+)/g)].map((m) => m[1]!).filter((n) => !defined.has(n)));
}

// ------------------------------------------------------------------ PromQL

/** Metric names an expression selects (string literals removed first, so label values do not count). */
function metricNames(expr: string): string[] {
  const code = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const names = new Set<string>();
  for (const m of code.matchAll(/\b(camfleet_[a-z0-9_]+)\b/g)) names.add(m[1]!);
  if (/\bup\s*\{/.test(code)) names.add("up");
  return [...names];
}

/** [metric, label] pairs of the selectors `metric{label="…"}` in an expression. */
function selectorLabels(expr: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const m of expr.matchAll(/\b(camfleet_[a-z0-9_]+)\{([^}]*)\}/g)) {
    for (const l of m[2]!.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) out.push([m[1]!, l[1]!]);
  }
  return out;
}

async function queriedExpressions(): Promise<Array<{ where: string; expr: string }>> {
  const out: Array<{ where: string; expr: string }> = [];
  const alerts = await yamlOf("monitoring/alerts.yml");
  for (const group of alerts.groups) for (const rule of group.rules) out.push({ where: `alerts.yml ${rule.alert}`, expr: rule.expr });
  const dash = JSON.parse(await read("monitoring/grafana-dashboard.json")) as Doc;
  for (const panel of dash.panels) for (const t of panel.targets ?? []) out.push({ where: `dashboard "${panel.title}"`, expr: t.expr });
  for (const v of dash.templating.list) out.push({ where: `dashboard variable ${v.name}`, expr: v.query.query });
  return out;
}

interface Scrape {
  /** Sample names (histograms as _bucket/_sum/_count), and every name with a # TYPE line. */
  names: Set<string>;
  /** Label names seen on each metric's samples (histogram parts under their base name too). */
  labels: Map<string, Set<string>>;
}

function parseScrape(text: string, into: Scrape): void {
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) {
      into.names.add(type[1]!);
      if (type[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) into.names.add(type[1]! + s);
      if (type[2] === "summary") for (const s of ["_sum", "_count"]) into.names.add(type[1]! + s);
      continue;
    }
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (m === null) continue;
    const labels = [...(m[2] ?? "").matchAll(/(\w+)="/g)].map((l) => l[1]!);
    for (const name of [m[1]!, m[1]!.replace(/_(bucket|sum|count)$/, "")]) {
      into.names.add(name);
      const set = into.labels.get(name) ?? new Set<string>();
      for (const l of labels) set.add(l);
      into.labels.set(name, set);
    }
  }
}

// ------------------------------------------------------------------ tests

describe("deploy/: every file parses", () => {
  it("YAML (all documents) and JSON", async () => {
    const files = (await filesUnder(DEPLOY)).filter((f) => /\.(ya?ml|json)$/.test(f));
    expect(files.length).toBeGreaterThanOrEqual(15);
    for (const file of files) {
      const text = await readFile(file, "utf8");
      if (file.endsWith(".json")) {
        expect(() => JSON.parse(text), relative(ROOT, file)).not.toThrow();
        continue;
      }
      const docs = parseAllDocuments(text, { merge: true, uniqueKeys: true });
      for (const d of docs) expect(d.errors.map((e) => `${relative(ROOT, file)}: ${e.message}`)).toEqual([]);
      expect(docs.length, relative(ROOT, file)).toBeGreaterThan(0);
    }
  });
});

describe("deploy/compose: the Compose Specification", () => {
  it("both compose files validate against the spec's JSON Schema, and a broken one does not", async () => {
    const schema = JSON.parse(await readFile(join(ROOT, "test", "fixtures", "compose-spec", "compose-spec.json"), "utf8")) as object;
    // The schema declares draft-07 by URL (not bundled with ajv 8) and uses formats ajv does not know: checked structurally.
    const validate = new Ajv({ strict: false, allErrors: true, validateSchema: false, validateFormats: false }).compile(schema);
    for (const file of ["compose.yaml", "compose.mediamtx.yaml"]) {
      const doc = await yamlOf(`compose/${file}`);
      validate(doc);
      expect((validate.errors ?? []).map((e) => `${file}${e.instancePath} ${e.message}`)).toEqual([]);
    }
    const broken = await yamlOf("compose/compose.yaml");
    broken.services["node-1"].depends_on.streams.condition = "service_done";
    expect(validate(broken)).toBe(false);
  });
});

describe("deploy/: environment variables are the config's", () => {
  it("compose: camfleet services set only accepted variables with valid values; NATS servers get the passwords accounts.conf reads", async () => {
    const natsVars = await natsConfigVariables();
    expect([...natsVars].sort()).toEqual(["CAMFLEET_ALERTS_PASSWORD", "CAMFLEET_DETECTOR_PASSWORD", "CAMFLEET_GATEWAY_PASSWORD", "CAMFLEET_NODE_PASSWORD", "CAMFLEET_OPERATOR_PASSWORD", "NATS_SYS_PASSWORD"]);
    const base = await yamlOf("compose/compose.yaml");
    const overlay = await yamlOf("compose/compose.mediamtx.yaml");
    let camfleetServices = 0;
    for (const [file, doc] of [["compose.yaml", base], ["compose.mediamtx.yaml", overlay]] as const) {
      for (const [name, svc] of Object.entries(doc.services as Record<string, Doc>)) {
        // The overlay's services are merged onto the base's (same name) or are its own (mediamtx).
        const merged: Doc = file === "compose.yaml" ? svc : { ...base.services[name], ...svc, environment: { ...base.services[name]?.environment, ...svc.environment } };
        if (merged.image !== "camfleet:latest") continue;
        const env = (merged.environment ?? {}) as Record<string, string>;
        if (merged.entrypoint?.[0] === "nats-server") {
          expect(Object.keys(env).sort(), `${file} ${name}`).toEqual([...natsVars].sort());
          continue;
        }
        camfleetServices++;
        const unknown = Object.keys(env).filter((k) => !ACCEPTED.has(k));
        expect(unknown, `${file} ${name}: not camfleet variables`).toEqual([]);
        expectValidConfig(`${file} ${name}`, env, roleOf(merged.command[0]));
      }
    }
    expect(camfleetServices).toBe(5 + 3); // streams, detector, node-1, node-2, gateway; the overlay's node-1, node-2, gateway
    // The overlay really moves the relay to MediaMTX: both nodes publish there.
    expect(overlay.services["node-1"].environment.WHIP_URL).toMatch(/^http:\/\/mediamtx:8889\//);
    expect(overlay.services["node-2"].environment.WHIP_URL).toBe(overlay.services["node-1"].environment.WHIP_URL);
  });

  it("Kubernetes: containers of the camfleet image set only accepted variables (ConfigMap included) with valid values; the NATS chart's env is accounts.conf's", async () => {
    const configMap = (await yamlDocsOf("k8s/config.yaml")).find((d) => d.kind === "ConfigMap" && d.metadata.name === "camfleet-config")!;
    const shared = configMap.data as Record<string, string>;
    expect(Object.keys(shared).filter((k) => !ACCEPTED.has(k))).toEqual([]);
    const manifests = ["k8s/nodes.yaml", "k8s/gateway.yaml", "k8s/detector.yaml", "k8s/streams-job.yaml"];
    const seen: string[] = [];
    for (const file of manifests) {
      for (const doc of await yamlDocsOf(file)) {
        const containers = (doc.spec?.template?.spec?.containers ?? []) as Doc[];
        for (const c of containers) {
          expect(c.image, `${file} ${c.name}`).toBe("camfleet:latest");
          const env: Record<string, string> = {};
          for (const from of c.envFrom ?? []) {
            expect(from.configMapRef.name).toBe("camfleet-config");
            Object.assign(env, shared);
          }
          for (const e of c.env ?? []) env[e.name] = e.value ?? "placeholder-1";
          // A helper variable (POD_IP) is allowed only as a $(ref) inside an accepted one.
          const refs = new Set(Object.values(env).flatMap((v) => [...v.matchAll(/\$\(([A-Z_]+)\)/g)].map((m) => m[1]!)));
          const unknown = Object.keys(env).filter((k) => !ACCEPTED.has(k) && !refs.has(k));
          expect(unknown, `${file} ${c.name}: not camfleet variables`).toEqual([]);
          const own = Object.fromEntries(Object.entries(env).filter(([k]) => ACCEPTED.has(k)));
          expectValidConfig(`${file} ${c.name}`, { ...own, ...Object.fromEntries([...refs].map((r) => [r, env[r]!])) }, roleOf(c.args[0]));
          seen.push(c.name);
        }
      }
    }
    expect(seen.sort()).toEqual(["detector", "gateway", "node", "streams"]);
    const values = await yamlOf("k8s/nats-values.yaml");
    expect(Object.keys(values.container.env).sort()).toEqual([...(await natsConfigVariables())].sort());
  });

  it("Dockerfile ENV and systemd units (Environment= and the env.example files) set only accepted variables with valid values", async () => {
    const dockerfile = await read("Dockerfile");
    const envBlock = /^ENV ((?:.*\\\n)*.*)$/m.exec(dockerfile)![1]!;
    const imageEnv = Object.fromEntries([...envBlock.matchAll(/([A-Z_]+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
    expect(Object.keys(imageEnv).filter((k) => !ACCEPTED.has(k))).toEqual([]);
    expectValidConfig("Dockerfile", imageEnv, "node");

    for (const unit of ["camfleet-node", "camfleet-gateway", "camfleet-detector"]) {
      const text = await read(`systemd/${unit}.service`);
      const role = /ExecStart=\S+ (\w+)/.exec(text)![1]!;
      expect(`camfleet-${role}`).toBe(unit);
      const set = Object.fromEntries([...text.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
      const envFile = /^EnvironmentFile=\/etc\/camfleet\/(.+)$/m.exec(text)![1]!;
      const example = Object.fromEntries(
        (await read(`systemd/${envFile}.example`))
          .split("\n")
          .filter((l) => l !== "" && !l.startsWith("#"))
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const),
      );
      const env = { ...set, ...example };
      expect(Object.keys(env).filter((k) => !ACCEPTED.has(k)), unit).toEqual([]);
      expectValidConfig(unit, env, roleOf(role));
    }
  });
});

describe("deploy/monitoring: queried metrics exist", () => {
  it("every metric of an alert rule or a Grafana panel is exported by a running node (with a camera) or gateway, with the labels the selectors name", { timeout: 90_000 }, async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const cam = await startRtspCamera({ onCleanup: onTestFinished, mounts: [{ path: "/door", width: 320, height: 240, fps: 10 }] });
    const node = await startFleetNode({ id: "deploy-n1", natsUrls: [nats.url], env: { CAMFLEET_ACTOR_KIND: "camera" }, onCleanup: onTestFinished });
    const ops = String((await node.proc.waitForLog((l) => l.msg === LOG_MESSAGES.servingOps)).url);
    const gateway = await startTestGateway({ natsUrl: nats.url, onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    // The per-camera series appear when a camera's actor starts on the node.
    await new ControlClient(nc).putCamera({ id: "door", url: cam.url("/door"), publish: "off", solutions: ["motion"], ai: { enabled: true, max_fps: 1 } });
    const nodeText = await waitFor(async () => {
      const text = await (await fetch(`${ops}/metrics`)).text();
      return /^camfleet_stream_up\{[^}]*camera="door"/m.test(text) ? text : undefined;
    }, { timeoutMs: 30_000, message: "the camera's series on the node's /metrics" });
    const gatewayRes = await fetch(`${gateway.url}/metrics`);
    expect(gatewayRes.status).toBe(200);

    const scraped: Scrape = { names: new Set(["up"]), labels: new Map() };
    parseScrape(nodeText, scraped);
    parseScrape(await gatewayRes.text(), scraped);

    const expressions = await queriedExpressions();
    expect(expressions.length).toBeGreaterThan(30);
    const missing: string[] = [];
    const badLabels: string[] = [];
    for (const { where, expr } of expressions) {
      const names = metricNames(expr);
      if (names.length === 0) missing.push(`${where}: queries no metric: ${expr}`);
      for (const name of names) if (!scraped.names.has(name)) missing.push(`${where}: ${name}`);
      for (const [metric, label] of selectorLabels(expr)) {
        const labels = scraped.labels.get(metric);
        // Labels are judged where samples exist (relay gauges have none without a WHEP session).
        if (labels !== undefined && labels.size > 0 && !labels.has(label) && label !== "job" && label !== "instance") badLabels.push(`${where}: ${metric} has no label ${label}`);
      }
    }
    expect(missing).toEqual([]);
    expect(badLabels).toEqual([]);
    // The check can fail: a made-up name is not among them.
    expect(scraped.names.has("camfleet_cameras_streaming")).toBe(false);
    // And the contract documents every camfleet metric these processes export (prom-client's process metrics aside).
    const contract = await readFile(join(ROOT, "docs", "contract.md"), "utf8");
    const undocumented = [...scraped.names].filter((n) => n.startsWith("camfleet_") && !n.startsWith("camfleet_process_") && !/_(bucket|sum|count)$/.test(n) && !contract.includes(n));
    expect(undocumented, "metrics missing from docs/contract.md").toEqual([]);
  });
});

describe("deploy/compose: the README's service table", () => {
  it("lists exactly the compose services, with the host ports they publish", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    const section = /^## Deploy\n([\s\S]*?)(?=^## )/m.exec(readme)?.[1];
    expect(section, "README has a ## Deploy section").toBeDefined();
    const rows = [...section!.matchAll(/^\| `([\w-]+)` \| `(compose[\w.]*\.yaml)` \| [^|]* \| ([^|]*) \|$/gm)].map((m) => ({
      service: m[1]!,
      file: m[2]!,
      ports: m[3]!.trim() === "–" ? [] : m[3]!.split(",").map((p) => p.trim().replace(/`/g, "")),
    }));
    const actual: typeof rows = [];
    for (const file of ["compose.yaml", "compose.mediamtx.yaml"]) {
      const doc = await yamlOf(`compose/${file}`);
      for (const [service, svc] of Object.entries(doc.services as Record<string, Doc>)) {
        // The overlay's own services only; it changes the others' environment.
        if (file !== "compose.yaml" && svc.image === undefined) continue;
        const ports = ((svc.ports ?? []) as string[]).map((p) => {
          const [spec, proto] = p.split("/");
          const host = spec!.split(":").slice(0, -1).join(":");
          return proto === undefined ? host : `${host}/${proto}`;
        });
        actual.push({ service, file, ports });
      }
    }
    expect(rows).toEqual(actual);
  });
});

describe("deploy/Dockerfile", () => {
  it("is Debian with Node 20, nats-server and ffmpeg from Debian, production dependencies only, a non-root user", async () => {
    const text = await read("Dockerfile");
    const stages = [...text.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(stages).toEqual(["node:20-bookworm-slim", "node:20-bookworm-slim"]);
    const final = text.slice(text.lastIndexOf("\nFROM "));
    expect(final).toMatch(/apt-get install -y --no-install-recommends nats-server ffmpeg util-linux/);
    expect(final).toMatch(/npm ci --omit=dev/);
    expect(final).toMatch(/^USER camfleet$/m);
  });

  it("the final stage's files run `camfleet detector` from the build, with no TypeScript source in the image", { timeout: 120_000 }, async () => {
    const text = await read("Dockerfile");
    const [buildStage, finalStage] = text.split(/^FROM .*$/m).slice(1);
    const copies = (stage: string) =>
      [...stage!.matchAll(/^COPY (--from=\w+ )?(.+)$/gm)].map((m) => {
        const parts = m[2]!.split(/\s+/);
        return { from: m[1] !== undefined, sources: parts.slice(0, -1), to: parts.at(-1)! };
      });
    const work = await mkdtemp(join(tmpdir(), "camfleet-image-"));
    onTestFinished(() => rm(work, { recursive: true, force: true }));
    // The build stage: its COPY lines from the repository, then its build.
    const src = join(work, "src");
    await mkdir(src);
    for (const c of copies(buildStage!)) {
      for (const s of c.sources) await cp(join(ROOT, s), join(src, c.to.endsWith("/") ? join(c.to, s.split("/").at(-1)!) : c.sources.length > 1 ? join(c.to, s) : c.to), { recursive: true });
    }
    await symlink(join(ROOT, "node_modules"), join(src, "node_modules"));
    await run(process.execPath, ["scripts/build.mjs", "--force"], { cwd: src });
    // The final stage: its COPY lines (the repository's, or the build's dist/), node_modules as npm ci made it.
    const app = join(work, "app");
    await mkdir(app);
    for (const c of copies(finalStage!)) {
      const base = c.from ? src : ROOT;
      for (const s of c.sources) {
        const from = c.from ? join(base, relative("/src", s)) : join(base, s);
        await cp(from, join(app, c.to.endsWith("/") ? join(c.to, s.split("/").at(-1)!) : c.to), { recursive: true });
      }
    }
    await symlink(join(ROOT, "node_modules"), join(app, "node_modules"));
    const now = new Date();
    await utimes(join(app, "dist", ".build-stamp"), now, now); // the Dockerfile's `touch`
    const tree = (await filesUnder(app)).map((f) => relative(app, f));
    expect(tree.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([]);
    expect(tree).toContain("dist/cli/main.js");
    expect(tree).toContain("dist/proto/detection.proto");

    const child = superviseSpawn(join(app, "bin", "camfleet"), ["detector"], {
      // The runner's environment (the suite's leak check follows it) without camfleet's own variables.
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !ACCEPTED.has(k) && !k.startsWith("NATS_"))), DETECTOR_LISTEN: "127.0.0.1:0" },
      stdio: ["ignore", "pipe"],
    });
    onTestFinished(async () => {
      await child.terminate(5000);
    });
    let out = "";
    child.child.stdout!.setEncoding("utf8").on("data", (s: string) => (out += s));
    await waitFor(() => out.includes(LOG_MESSAGES.detectorListening), { timeoutMs: 30_000, message: `the detector from the image's files: ${out}${child.stderrTail()}` });
    expect((await child.terminate(5000)).code).toBe(0);
  });
});
