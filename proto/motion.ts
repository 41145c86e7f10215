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
      found.push({ x: minX / w, y: minY / h, w: (maxX - minX + 1) / w, h: (maxY - minY + 1) / h, pixels, meanDiff: sum / pixels });
    }
  }
  found.sort((a, b) => b.pixels - a.pixels || a.y - b.y || a.x - b.x);
  return found.slice(0, maxRegions);
}

export interface MotionGateOptions {
  /** Width the frame is averaged down to before comparing, px. Default 64. */
  width?: number;
  /** A cell counts as changed above this grey-level difference (0..255). Default 12. */
  threshold?: number;
  /** Motion when at least this many cells changed. Default 2. */
  minCells?: number;
}

/**
 * Cheap frame differencing for the node: is this frame different enough from
 * the previous one to be worth a detector call? The first frame counts as
 * motion (there is nothing to compare it with yet).
 */
export class MotionGate {
  readonly #width: number;
  readonly #threshold: number;
  readonly #minCells: number;
  #previous?: GrayImage;

  constructor(options: MotionGateOptions = {}) {
    this.#width = options.width ?? 64;
    this.#threshold = options.threshold ?? 12;
    this.#minCells = options.minCells ?? 2;
  }

  /** Compares with the previous frame and keeps this one; `score` is the share of cells that changed. */
  check(gray: GrayImage): { motion: boolean; score: number } {
    const small = downscale(gray, this.#width);
    const previous = this.#previous;
    this.#previous = small;
    if (previous === undefined || previous.width !== small.width || previous.height !== small.height) return { motion: true, score: 1 };
    const d = difference(small, previous, this.#threshold);
    const cells = Math.round(d.changed * small.width * small.height);
    return { motion: cells >= this.#minCells, score: d.changed };
  }

  reset(): void {
    this.#previous = undefined;
  }
}
