/**
 * The process logger: pino JSON on stdout, one object per line, each with the
 * trace_id and span_id of the active span (when there is one) so a line leads
 * to its trace. Secrets and report payloads never go in log fields; the
 * redaction list below is the safety net for mistakes. LOG_FORMAT=pretty
 * prints human-readable lines instead (pino-pretty), for a terminal only.
 */
import { trace } from "@opentelemetry/api";
import { type DestinationStream, type Logger, pino } from "pino";
import pretty from "pino-pretty";
import { spanContextValid } from "./spans.js";

/** How log lines are written. */
export interface LoggerOptions {
  /** "json" (default) or "pretty". */
  format?: "json" | "pretty";
  /** Where lines go (stdout by default); tests capture them here. */
  destination?: DestinationStream;
}

/** Fields that may carry secrets or report payloads, wherever they appear (two levels deep). */
const redactedPaths = [
  "redisUrl",
  "filters",
  "*.filters",
  "*.password",
  "*.authorization",
  "*.apiKey",
  "*.api_key",
  "*.token",
  "*.cookie",
  "headers",
  "*.headers",
];

/** trace_id and span_id of the active span, for every line logged inside a traced operation. */
function traceFields(): Record<string, string> {
  const ctx = trace.getActiveSpan()?.spanContext();
  if (ctx === undefined || !spanContextValid(ctx)) return {};
  return { trace_id: ctx.traceId, span_id: ctx.spanId };
}

/**
 * pino's isoTime (`,"time":"<ISO 8601>"`), the text made once per
 * millisecond: lines logged in the same millisecond (a busy API logs several)
 * share it instead of formatting a Date each.
 */
let timeMs = Number.NaN;
let timeText = "";
export function isoTime(): string {
  const now = Date.now();
  if (now !== timeMs) {
    timeMs = now;
    timeText = `,"time":"${new Date(now).toISOString()}"`;
  }
  return timeText;
}

/** Creates the root logger at `level`. */
export function createLogger(
  level: string,
  base: Record<string, unknown> = {},
  options: LoggerOptions = {},
): Logger {
  const destination =
    options.format === "pretty"
      ? pretty({
          colorize: process.stdout.isTTY === true && options.destination === undefined,
          destination: options.destination ?? 1,
          sync: true,
        })
      : options.destination;
  return pino(
    {
      level,
      base: { service: "report-jobs", ...base },
      timestamp: isoTime,
      mixin: traceFields,
      redact: { paths: redactedPaths, censor: "[redacted]" },
    },
    destination,
  );
}
