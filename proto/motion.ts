/**
 * Pixel analysis shared by the node's motion gate and the reference
 * detector: grey conversion, box-filter downscaling, a running-average
 * background model and connected regions. Pure and deterministic: the same
 * frames give the same boxes, bit for bit.
 */

/** A grey image, one byte or one float per pixel, rows top to bottom. */
export interface GrayImage {
  data: Uint8Array | Float32Array;
  width: number;
  height: number;
}

/** Grey of a raw gray or rgb24 frame (ITU-R BT.601 luma weights, integer arithmetic). */
export function toGray(data: Uint8Array, width: number, height: number, bytesPerPixel: 1 | 3 | 4): GrayImage {
  if (bytesPerPixel === 1) return { data, width, height };
  const out = new Uint8Array(width * height);
  for (let i = 0, p = 0; i < out.length; i++, p += bytesPerPixel) {
    out[i] = (77 * data[p]! + 150 * data[p + 1]! + 29 * data[p + 2]!) >> 8;
  }
  return { data: out, width, height };
}

/**
 * Averages blocks of pixels down to at most `maxWidth` wide, keeping the
 * aspect ratio. Averaging is what makes the difference of two frames robust
 * to sensor and compression noise.
 */
export function downscale(img: GrayImage, maxWidth: number): GrayImage {
  const factor = Math.max(1, Math.ceil(img.width / maxWidth));
  if (factor === 1) return { data: Float32Array.from(img.data), width: img.width, height: img.height };
  const w = Math.floor(img.width / factor);
  const h = Math.max(1, Math.floor(img.height / factor));
  const out = new Float32Array(w * h);
  const src = img.data;
  const area = factor * factor;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let sum = 0;
      for (let dy = 0; dy < factor; dy++) {
        const row = (y * factor + dy) * img.width + x * factor;
        for (let dx = 0; dx < factor; dx++) sum += src[row + dx]!;
      }
      out[y * w + x] = sum / area;
    }
  }
  return { data: out, width: w, height: h };
}

export interface FrameDiff {
  /** 1 where the pixel differs from the reference by more than the threshold. */
  mask: Uint8Array;
  /** |difference| of every pixel. */
  diff: Float32Array;
  width: number;
  height: number;
  /** Share of pixels in the mask, 0..1. */
  changed: number;
}

export function difference(current: GrayImage, reference: GrayImage, threshold: number): FrameDiff {
  const n = current.width * current.height;
  const mask = new Uint8Array(n);
  const diff = new Float32Array(n);
  let changed = 0;
  for (let i = 0; i < n; i++) {
    const d = Math.abs(current.data[i]! - reference.data[i]!);
    diff[i] = d;
    if (d > threshold) {
      mask[i] = 1;
      changed++;
    }
  }
  return { mask, diff, width: current.width, height: current.height, changed: n === 0 ? 0 : changed / n };
}

export interface Region {
  /** Normalised 0..1. */
  x: number;
  y: number;
  w: number;
  h: number;
  /** The region's bounding rectangle in pixels of the analysed image: [x0, x1) × [y0, y1). */
  px: { x0: number; y0: number; x1: number; y1: number };
  /** Pixels of the region in the mask. */
  pixels: number;
  /** Mean |difference| over the region's pixels, 0..255. */
  meanDiff: number;
}

/**
 * 8-connected regions of the mask with at least `minPixels` pixels, largest
 * first, as normalised boxes. One flood fill per region with an explicit
 * stack: no recursion depth to overflow on a frame that changed entirely.
 */
export function regions(d: FrameDiff, minPixels: number, maxRegions: number): Region[] {
  const { mask, diff, width: w, height: h } = d;
  const seen = new Uint8Array(mask.length);
  const stack = new Int32Array(mask.length);
  const found: Region[] = [];
  for (let start = 0; start < mask.length; start++) {
    if (mask[start] === 0 || seen[start] === 1) continue;
    let top = 0;
    stack[top++] = start;
    seen[start] = 1;
    let minX = w, minY = h, maxX = -1, maxY = -1, pixels = 0, sum = 0;
    while (top > 0) {
      const i = stack[--top]!;
      const x = i % w;
      const y = (i - x) / w;
      pixels++;
      sum += diff[i]!;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= h) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          if (nx < 0 || nx >= w) continue;
          const j = ny * w + nx;
          if (mask[j] === 1 && seen[j] === 0) {
            seen[j] = 1;
            stack[top++] = j;
          }
        }
      }
    }
    if (pixels >= minPixels) {
      found.push({
        x: minX / w,
        y: minY / h,
        w: (maxX - minX + 1) / w,
        h: (maxY - minY + 1) / h,
        px: { x0: minX, y0: minY, x1: maxX + 1, y1: maxY + 1 },
        pixels,
        meanDiff: sum / pixels,
      });
    }
  }
  found.sort((a, b) => b.pixels - a.pixels || a.y - b.y || a.x - b.x);
  return found.slice(0, maxRegions);
}

/**
 * While the noise is being learned (after the first frame or a size change)
 * the base bar starts at `threshold` × LEARNING_BAR_FACTOR, above any camera
 * noise seen here (≤ 45 grey levels per cell: the SMPTE pattern's noise patch
 * over H.264), and comes down to `threshold` over LEARNING_COMPARISONS
 * comparisons, as the cells' noise estimates become trustworthy.
 */
const LEARNING_COMPARISONS = 20;
const LEARNING_BAR_FACTOR = 4;

export interface MotionGateOptions {
  /** Width the frame is averaged down to before comparing, px. Default 64. */
  width?: number;
  /** A cell counts as changed above this grey-level difference (0..255) plus `noiseFactor` × its noise. Default 12. */
  threshold?: number;
  /** How many times a cell's own noise (its mean frame-to-frame difference) a change must exceed on top of `threshold`. Default 5: at 4, a noise
   * patch's cells whose mean was learned low from few samples gave about one false pass in
   * 20,000 frames (found by the property test in test/detect-gate.test.ts). */
  noiseFactor?: number;
  /** Weight of the newest difference in a cell's noise estimate, 0..1. Default 0.05. */
  noiseAlpha?: number;
  /** Motion when at least this many cells changed. Default 2. */
  minCells?: number;
  /** A frame passes at least this often without motion (the detector still sees a still scene now and then), ms. Default 60000. */
  heartbeatMs?: number;
}

export interface GateVerdict {
  /** Send this frame to the detector: motion, or a heartbeat. */
  pass: boolean;
  /** The frame differs from the previous one by more than noise. */
  motion: boolean;
  /** Passed without motion because the last pass was `heartbeatMs` ago. */
  heartbeat: boolean;
  /** Share of cells that changed, 0..1. */
  score: number;
}

/**
 * Cheap frame differencing for the node: is this frame different enough from
 * the previous one to be worth a detector call?
 *
 * A real H.264 camera never sends two identical frames of a still scene: the
 * encoder refines the picture between key frames and every key frame resets
 * it, and sensors (or a test pattern's noise patch) add noise of their own.
 * A fixed threshold either lets all of that through or misses real motion. So
 * each cell (of the luma averaged down to `width`) learns its own noise, the
 * running mean of its frame-to-frame difference, and changes only when it
 * differs by more than `threshold` + `noiseFactor` × that noise. A noisy patch
 * learns a high bar; a quiet wall keeps the low one, so an object moving over
 * it passes at once. What a cell learns is clipped at its bar, so one burst of
 * motion barely raises it. Learning starts as a plain mean (fast: a noisy
 * scene is learned in a few frames) and becomes an exponential one.
 *
 * The first frame passes (there is nothing to compare it with), and then at
 * least one frame every `heartbeatMs`, motion or not.
 */
export class MotionGate {
  readonly #width: number;
  readonly #threshold: number;
  readonly #noiseFactor: number;
  readonly #alpha: number;
  readonly #minCells: number;
  readonly #heartbeatMs: number;
  #previous?: GrayImage;
  #noise?: Float32Array;
  /** Comparisons learned from since the noise was (re)started. */
  #learned = 0;
  #lastPass = Number.NEGATIVE_INFINITY;
  #diff = new Float32Array(0);
  readonly #histogram = new Uint32Array(256);

  constructor(options: MotionGateOptions = {}) {
    this.#width = options.width ?? 64;
    this.#threshold = options.threshold ?? 12;
    this.#noiseFactor = options.noiseFactor ?? 5;
    this.#alpha = options.noiseAlpha ?? 0.05;
    this.#minCells = options.minCells ?? 2;
    this.#heartbeatMs = options.heartbeatMs ?? 60_000;
    if (!(this.#alpha > 0 && this.#alpha <= 1)) throw new RangeError(`MotionGateOptions.noiseAlpha must be in (0, 1], got ${this.#alpha}`);
  }

  /** Compares with the previous frame and keeps this one. `now` is a monotonic time in ms (for the heartbeat). */
  check(gray: GrayImage, now = 0): GateVerdict {
    const small = downscale(gray, this.#width);
    const previous = this.#previous;
    this.#previous = small;
    const n = small.width * small.height;
    if (this.#noise?.length !== n || previous === undefined || previous.width !== small.width) {
      if (this.#noise?.length !== n) {
        this.#noise = new Float32Array(n);
        this.#learned = 0;
      }
      this.#lastPass = now;
      return { pass: true, motion: true, heartbeat: false, score: 1 };
    }
    const noise = this.#noise;
    const cur = small.data;
    const prev = previous.data;
    // Plain mean over the first 1/alpha comparisons, then exponential.
    const a = Math.max(this.#alpha, 1 / (this.#learned + 1));
    // While the noise is still being learned, only a strong change counts.
    const learning = Math.max(0, 1 - this.#learned / LEARNING_COMPARISONS);
    const base = this.#threshold * (1 + (LEARNING_BAR_FACTOR - 1) * learning);
    this.#learned++;
    const diff = this.#diff.length === n ? this.#diff : (this.#diff = new Float32Array(n));
    for (let i = 0; i < n; i++) diff[i] = Math.abs(cur[i]! - prev[i]!);
    // A key frame changes every cell a little at once: the frame's median change is noise too.
    const pulse = median(diff, this.#histogram);
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const d = diff[i]!;
      const bar = base + this.#noiseFactor * Math.max(noise[i]!, pulse);
      if (d > bar) changed++;
      noise[i] = noise[i]! + a * (Math.min(d, bar) - noise[i]!);
    }
    const motion = changed >= this.#minCells;
    const heartbeat = !motion && now - this.#lastPass >= this.#heartbeatMs;
    if (motion || heartbeat) this.#lastPass = now;
    return { pass: motion || heartbeat, motion, heartbeat, score: changed / n };
  }

  /** Forgets the previous frame (the next one passes); the learned noise stays, it belongs to the scene. */
  reset(): void {
    this.#previous = undefined;
  }
}

/** Median of values in 0..255, to one grey level, by a histogram (linear, no sort). */
function median(values: Float32Array, histogram: Uint32Array): number {
  histogram.fill(0);
  for (let i = 0; i < values.length; i++) histogram[Math.min(255, values[i]! | 0)]!++;
  const half = values.length / 2;
  let seen = 0;
  for (let v = 0; v < 256; v++) {
    seen += histogram[v]!;
    if (seen >= half) return v;
  }
  return 255;
}
