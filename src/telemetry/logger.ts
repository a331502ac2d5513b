/** The process logger: pino JSON on stdout. Secrets never go in log fields. */
import { type Logger, pino } from "pino";

/** Creates the root logger at `level`. */
export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: "report-jobs", ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ["*.password", "*.authorization", "redisUrl"], censor: "[redacted]" },
  });
}
