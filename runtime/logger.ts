import { pino, type DestinationStream, type Logger } from "pino";
import { prettyFactory } from "pino-pretty";
import { redact } from "../subjects/index.ts";

export type { Logger } from "pino";

export interface LoggerOptions {
  /** Put on every line; the contract (docs/contract.md, "Metrics and logs") asks for `node` on each. */
  node: string;
  level?: string;
  /** Default: stdout. Tests pass a stream to read lines back. */
  destination?: DestinationStream;
  /**
   * `json` (default): one JSON line per entry, for machines. `pretty`: the same
   * entries as readable lines (pino-pretty), for a person at a terminal.
   */
  format?: "json" | "pretty";
  /** Colours in the pretty format (ANSI). Default: when stdout is a terminal. */
  colorize?: boolean;
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
    redactingStream(destination, options.format === "pretty" ? prettyLines(options.colorize ?? process.stdout.isTTY === true) : undefined),
  );
}

/**
 * pino-pretty's formatter, called in line on each entry rather than as its
 * transport stream: the write stays synchronous, so the lines keep their
 * order with what the CLI prints itself and a flush before exit loses none.
 */
function prettyLines(colorize: boolean): (line: string) => string {
  return prettyFactory({
    colorize,
    translateTime: "SYS:HH:MM:ss.l",
    // One machine, one node: its id on every line is noise to a reader (the JSON format keeps it).
    ignore: "pid,hostname,node",
    singleLine: true,
  });
}

/** Wraps a destination so every serialized line is redacted before it is written. */
function redactingStream(inner: DestinationStream, format?: (line: string) => string): DestinationStream & { flush?: () => void } {
  const flushable = inner as DestinationStream & { flush?: (cb?: () => void) => void; flushSync?: () => void };
  return {
    // Redacted before formatting: the pretty format prints what the JSON line says, no more.
    write: format === undefined ? (line: string) => inner.write(redact(line)) : (line: string) => inner.write(format(redact(line))),
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
