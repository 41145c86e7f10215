// The soak's judge: a resource leaks when the slope of its samples over time
// (least squares) is above that resource's threshold, and clearly so: more
// than twice the slope's standard error, so a sawtooth (nodes replaced, FFmpeg
// restarted by a fault) is not called a leak by chance. The soak proves the
// judge on a control run with a deliberate leak before it trusts a clean verdict.

import { linearRegression, linearRegressionLine, mean } from "simple-statistics";

export interface Sample {
  /** Minutes since the phase began. */
  t: number;
  value: number;
}

export interface Verdict {
  resource: string;
  samples: number;
  first: number;
  last: number;
  /** Units per minute. */
  slope: number;
  /** Standard error of the slope, units per minute. */
  stderr: number;
  /** Units per minute above which a significant slope is a leak. */
  threshold: number;
  leaks: boolean;
}

/** Least-squares slope of `samples` and its standard error; a leak when slope > threshold and slope > 2 × stderr. */
export function judge(resource: string, samples: readonly Sample[], threshold: number): Verdict {
  const points = samples.filter((s) => Number.isFinite(s.value)).map((s) => [s.t, s.value] as [number, number]);
  const base = { resource, samples: points.length, first: points[0]?.[1] ?? NaN, last: points.at(-1)?.[1] ?? NaN, threshold };
  if (points.length < 3) return { ...base, slope: NaN, stderr: NaN, leaks: false };
  const fit = linearRegression(points);
  const line = linearRegressionLine(fit);
  const xs = points.map((p) => p[0]);
  const xMean = mean(xs);
  const sxx = xs.reduce((s, x) => s + (x - xMean) ** 2, 0);
  const sse = points.reduce((s, [x, y]) => s + (y - line(x)) ** 2, 0);
  const stderr = sxx > 0 ? Math.sqrt(sse / (points.length - 2) / sxx) : Infinity;
  return { ...base, slope: fit.m, stderr, leaks: fit.m > threshold && fit.m > 2 * stderr };
}
