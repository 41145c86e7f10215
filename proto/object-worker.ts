/**
 * The object model's thread (started by object-detector.ts, never imported):
 * MB3-CenterNet (COCO's 80 classes), the model that @vladmandic/human ships
 * in its own models/ folder, run by Human on TensorFlow.js's WebAssembly
 * backend. Inference takes hundreds of milliseconds of CPU, so it runs here
 * and never on the node's event loop.
 *
 * Messages in: WorkerRequest; out: WorkerReply (see object-detector.ts).
 * Nothing is fetched from the network: the model's files are read from the
 * installed package, the .wasm binaries from @tensorflow/tfjs-backend-wasm.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-converter";
import jpeg from "jpeg-js";
import type { WorkerReply, WorkerRequest, WorkerSetup } from "./object-detector.ts";

const require = createRequire(import.meta.url);
const setup = workerData as WorkerSetup;
const port = parentPort;
if (port === null) throw new Error("object-worker.ts runs as a worker thread of object-detector.ts");

// Human's package.json names its builds in "exports" without the leading "./",
// which Node refuses; its folder is found through the main entry instead
// (resolved only, not loaded: that build wants tfjs-node, which downloads a binary).
const humanDir = join(dirname(require.resolve("@vladmandic/human")), "..");
const modelDir = join(humanDir, "models");
const wasmDir = dirname(require.resolve("@tensorflow/tfjs-backend-wasm")) + "/";

// TensorFlow.js reads file:// models only through tfjs-node; this router reads
// the graph model's JSON and weight shards from disk for tf.loadGraphModel.
// (A router answers null for URLs it does not take; tfjs's type omits that.)
const fileRouter = (url: string | string[]): tf.io.IOHandler | null => {
  if (typeof url !== "string" || !url.startsWith("file://")) return null;
  const path = url.slice("file://".length);
  return {
    load: async () => {
      const json = JSON.parse(readFileSync(path, "utf8")) as {
        modelTopology: object;
        format?: string;
        generatedBy?: string;
        convertedBy?: string;
        signature?: object;
        userDefinedMetadata?: Record<string, object>;
        weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
      };
      const shards = json.weightsManifest.flatMap((group) => group.paths.map((p) => readFileSync(join(dirname(path), p))));
      const weights = Buffer.concat(shards);
      return {
        modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest.flatMap((group) => group.weights),
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
        ...(json.format !== undefined ? { format: json.format } : {}),
        ...(json.generatedBy !== undefined ? { generatedBy: json.generatedBy } : {}),
        ...(json.convertedBy !== undefined ? { convertedBy: json.convertedBy } : {}),
        ...(json.signature !== undefined ? { signature: json.signature } : {}),
        ...(json.userDefinedMetadata !== undefined ? { userDefinedMetadata: json.userDefinedMetadata } : {}),
      };
    },
  };
};
tf.io.registerLoadRouter(fileRouter as Parameters<typeof tf.io.registerLoadRouter>[0]);

interface HumanObject {
  score: number;
  label: string;
  boxRaw: [number, number, number, number];
}
interface HumanInstance {
  load(): Promise<void>;
  detect(input: tf.Tensor, config?: object): Promise<{ object: HumanObject[]; error?: string | null }>;
  tf: { getBackend(): string };
}
// The WASM build of Human takes tfjs-core, -converter and -backend-wasm from node_modules (the same tf as above).
const { Human } = require(join(humanDir, "dist", "human.node-wasm.js")) as { Human: new (config: object) => HumanInstance };

const human = new Human({
  backend: "wasm",
  wasmPath: wasmDir,
  modelBasePath: `file://${modelDir}/`,
  debug: false,
  async: true,
  // Only the object model: Human's face, body, hand and segmentation models stay unloaded.
  face: { enabled: false },
  body: { enabled: false },
  hand: { enabled: false },
  gesture: { enabled: false },
  segmentation: { enabled: false },
  filter: { enabled: false },
  // 0: every frame is analysed; Human otherwise skips frames it thinks unchanged.
  cacheSensitivity: 0,
  object: { enabled: true, modelPath: "centernet.json", minConfidence: setup.minScore, iouThreshold: setup.iou, maxDetected: setup.maxDetected, skipFrames: 0 },
});

/** A [1, h, w, 3] int32 tensor of the frame: gray is repeated into three channels, JPEG decoded here (off the event loop). */
function toTensor(req: WorkerRequest): tf.Tensor4D {
  const data = new Uint8Array(req.data);
  if (req.format === "rgb24") return tf.tensor4d(data, [1, req.height, req.width, 3], "int32");
  if (req.format === "gray") {
    return tf.tidy(() => tf.tile(tf.tensor4d(data, [1, req.height, req.width, 1], "int32"), [1, 1, 1, 3]) as tf.Tensor4D);
  }
  const image = jpeg.decode(data, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: setup.maxJpegMegapixels, maxMemoryUsageInMB: 512 });
  if ((req.width !== 0 && req.width !== image.width) || (req.height !== 0 && req.height !== image.height)) {
    throw new InvalidFrame(`frame says ${req.width}x${req.height}, but the JPEG is ${image.width}x${image.height}`);
  }
  return tf.tidy(() => tf.slice(tf.tensor4d(image.data, [1, image.height, image.width, 4], "int32"), [0, 0, 0, 0], [1, image.height, image.width, 3]) as tf.Tensor4D);
}

class InvalidFrame extends Error {}

async function main(): Promise<void> {
  await tf.setBackend("wasm").catch(() => false);
  await human.load();
  port!.postMessage({ type: "ready", backend: human.tf.getBackend() } satisfies WorkerReply);
  port!.on("message", (req: WorkerRequest) => void run(req));
}

async function run(req: WorkerRequest): Promise<void> {
  const started = performance.now();
  let input: tf.Tensor4D | undefined;
  try {
    try {
      input = toTensor(req);
    } catch (err) {
      port!.postMessage({ type: "result", id: req.id, invalid: `frame is unusable: ${err instanceof Error ? err.message : String(err)}` } satisfies WorkerReply);
      return;
    }
    const result = await human.detect(input, { object: { minConfidence: req.minScore, iouThreshold: req.iou, maxDetected: setup.maxDetected } });
    if (result.error) throw new Error(result.error);
    const objects = result.object.map((o) => ({ label: o.label, score: o.score, box: o.boxRaw }));
    port!.postMessage({ type: "result", id: req.id, objects, ms: performance.now() - started } satisfies WorkerReply);
  } catch (err) {
    port!.postMessage({ type: "result", id: req.id, error: err instanceof Error ? err.message : String(err) } satisfies WorkerReply);
  } finally {
    input?.dispose();
  }
}

main().catch((err: unknown) => {
  port.postMessage({ type: "failed", error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies WorkerReply);
});
