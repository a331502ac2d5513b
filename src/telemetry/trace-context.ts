/** W3C traceparent helpers: trace ids for events and logs, links to earlier runs. */
import type { Link } from "@opentelemetry/api";

const zeroTraceId = "0".repeat(32);

/** The trace id of a traceparent ("00-<trace id>-<span id>-<flags>"); "" when there is none. */
export function traceIdOf(traceparent: string | undefined): string {
  // The part after the first dash, up to the next (split("-")[1], without
  // the array: GetJob reads one per call). A valid id has no dash, so it is
  // the 32 characters after the first dash, followed by a dash or the end.
  if (traceparent === undefined) return "";
  const start = traceparent.indexOf("-") + 1;
  const end = start + 32;
  if (start === 0 || traceparent.length < end) return "";
  if (traceparent.length > end && traceparent.charCodeAt(end) !== 0x2d) return "";
  const id = traceparent.slice(start, end);
  return hexTraceId.test(id) && id !== zeroTraceId ? id : "";
}

const hexTraceId = /^[0-9a-f]{32}$/;

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
