import { z } from "zod";
import { CamfleetError } from "./errors.ts";

/**
 * Camera, tenant, site and node ids. The pattern keeps every id a single safe
 * NATS subject token and a valid KV key: no `.`, `*`, `>`, whitespace.
 */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export const IdSchema = z
  .string()
  .regex(ID_PATTERN, "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'");

export type IdKind = "camera" | "tenant" | "site" | "node";

export function isValidId(value: unknown): value is string {
  return typeof value === "string" && ID_PATTERN.test(value);
}

/** Returns the id, or throws INVALID_ARGUMENT naming what was wrong. */
export function assertId(kind: IdKind, value: unknown): string {
  if (isValidId(value)) return value;
  const shown = typeof value === "string" ? JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value) : typeof value;
  throw new CamfleetError(
    "INVALID_ARGUMENT",
    `${kind} id ${shown} is invalid: it must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'`,
  );
}

export const DEFAULT_TENANT = "default";
export const DEFAULT_SITE = "default";
