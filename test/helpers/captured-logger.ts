/**
 * A real pino logger (the service's createLogger) whose JSON lines are kept
 * in memory, for tests that check what was logged and at which level.
 */
import { Writable } from "node:stream";
import type { Logger } from "pino";
import { createLogger } from "../../src/telemetry/logger.js";

/** One logged line, parsed. */
export interface CapturedLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** pino's numeric levels. */
export const logLevel = { info: 30, warn: 40, error: 50 } as const;

/** A logger at `level` and the lines it has written so far. */
export function capturedLogger(level = "info"): { logger: Logger; lines: CapturedLine[] } {
  const lines: CapturedLine[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) {
        if (l.trim() !== "") lines.push(JSON.parse(l) as CapturedLine);
      }
      cb();
    },
  });
  return { lines, logger: createLogger(level, {}, { destination: stream }) };
}
