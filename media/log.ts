/**
 * What media code logs through. pino's Logger fits it as it is; media/ keeps
 * to werift and subjects/, so it names the few methods it calls instead of
 * importing the runtime's logger.
 */
export interface MediaLogger {
  child(bindings: Record<string, unknown>): MediaLogger;
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const silent: MediaLogger = { child: () => silent, debug() {}, info() {}, warn() {}, error() {} };

/** A logger that drops everything: the default where no logger is given. */
export function silentMediaLogger(): MediaLogger {
  return silent;
}
