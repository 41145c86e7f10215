import { pino, type DestinationStream, type Logger } from "pino";
import { redact } from "../subjects/index.ts";

export type { Logger } from "pino";

export interface LoggerOptions {
  /** Put on every line; the contract (docs/contract.md, "Metrics and logs") asks for `node` on each. */
  node: string;
  level?: string;
  /** Default: stdout. Tests pass a stream to read lines back. */
  destination?: DestinationStream;
}

/** Field names whose values are secrets whatever they look like. */
const SECRET_KEYS = ["token", "apiToken", "password", "authorization", "Authorization", "secret"];

/**
 * JSON logs (pino) with `node` on every line. Credentials never reach the
 * output: each finished line goes through subjects' `redact` on its way to
 * the destination, which covers messages, fields, child bindings and error
 * stacks alike; fields named like secrets are censored outright.
 */
export function createLogger(options: LoggerOptions): Logger {
  const destination = options.destination ?? pino.destination({ dest: 1, sync: false });
  return pino(
    {
      level: options.level ?? "info",
      base: { node: options.node },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: SECRET_KEYS.flatMap((k) => [k, `*.${k}`]), censor: "***" },
      formatters: { level: (label) => ({ level: label }) },
    },
    redactingStream(destination),
  );
}

/** Wraps a destination so every serialized line is redacted before it is written. */
function redactingStream(inner: DestinationStream): DestinationStream & { flush?: () => void } {
  const flushable = inner as DestinationStream & { flush?: (cb?: () => void) => void; flushSync?: () => void };
  return {
    write: (line: string) => inner.write(redact(line)),
    // pino's logger.flush() calls this; keep buffered destinations (SonicBoom) flushable.
    flush: () => {
      if (typeof flushable.flushSync === "function") flushable.flushSync();
      else flushable.flush?.();
    },
  };
}

/** A logger that writes nothing, for library defaults. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
