/**
 * The process logger: pino JSON on stdout, one object per line, each with the
 * trace_id and span_id of the active span (when there is one) so a line leads
 * to its trace. Secrets and report payloads never go in log fields; the
 * redaction list below is the safety net for mistakes. LOG_FORMAT=pretty
 * prints human-readable lines instead (pino-pretty), for a terminal only.
 */
import { type SpanContext, trace } from "@opentelemetry/api";
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

/** The span context traceFields last checked, and whether it was valid (two regular expressions). */
let checkedContext: SpanContext | undefined;
let checkedValid = false;

/**
 * trace_id and span_id of the active span, for every line logged inside a
 * traced operation; undefined outside one. A span's lines (a job's, a
 * call's) come one after another, so its context's validity is checked once.
 */
function traceFields(): Record<string, string> | undefined {
  const ctx = trace.getActiveSpan()?.spanContext();
  if (ctx === undefined) return undefined;
  if (ctx !== checkedContext) {
    checkedContext = ctx;
    checkedValid = spanContextValid(ctx);
  }
  return checkedValid ? { trace_id: ctx.traceId, span_id: ctx.spanId } : undefined;
}

/**
 * The line's fields after the trace fields, as pino's default merge puts
 * them; without trace fields the line's own object, not a copy of it.
 */
function mergeTraceFields(line: object, fields: object | undefined): object {
  return fields === undefined ? line : Object.assign(fields, line);
}

/** The second of the last timestamp (ms since the epoch / 1000) and its ISO text up to the ms. */
let isoSecond = Number.NaN;
let isoPrefix = "";

/**
 * pino's `isoTime` (`,"time":"2026-12-03T13:55:12.345Z"`, the same text),
 * with the date and time to the second formatted once a second: lines come
 * hundreds a second, and Date#toISOString was about a sixth of a line's cost.
 */
export function isoTime(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== isoSecond) {
    const iso = new Date(second * 1000).toISOString();
    isoSecond = second;
    // Up to and including the "." before the milliseconds ("000Z" follow).
    isoPrefix = `,"time":"${iso.slice(0, iso.length - 4)}`;
  }
  const ms = now - second * 1000;
  return `${isoPrefix}${ms < 10 ? "00" : ms < 100 ? "0" : ""}${ms}Z"`;
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
      // pino's types want an object; undefined is merged by mergeTraceFields.
      mixin: traceFields as () => object,
      mixinMergeStrategy: mergeTraceFields,
      redact: { paths: redactedPaths, censor: "[redacted]" },
    },
    destination,
  );
}
