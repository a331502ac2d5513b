/** W3C traceparent helpers: trace ids for events and logs, links to earlier runs. */
import type { Link } from "@opentelemetry/api";

const zeroTraceId = "0".repeat(32);

/** The trace id of a traceparent ("00-<trace id>-<span id>-<flags>"); "" when there is none. */
export function traceIdOf(traceparent: string | undefined): string {
  const id = traceparent?.split("-")[1] ?? "";
  return /^[0-9a-f]{32}$/.test(id) && id !== zeroTraceId ? id : "";
}

/** A span link to the span a traceparent names (none for an invalid one). */
export function linkTo(traceparent: string | undefined): Link[] {
  const parts = traceparent?.split("-") ?? [];
  const traceId = traceIdOf(traceparent);
  const spanId = parts[2] ?? "";
  if (traceId === "" || !/^[0-9a-f]{16}$/.test(spanId)) return [];
  return [
    {
      context: {
        traceId,
        spanId,
        traceFlags: Number.parseInt(parts[3] ?? "0", 16) || 0,
        isRemote: true,
      },
      attributes: { "reports.link.reason": "retry of an earlier run" },
    },
  ];
}
