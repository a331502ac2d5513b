/**
 * Starting a span on the hot paths (the RPC routes, the interceptor, the
 * enqueue). When the SDK runs but no span can be recorded (no exporter and no
 * test processor: telemetry.ts chooses the always-off sampler), every span the
 * SDK's tracer would return is a non-recording one: the parent's trace id (or
 * a fresh one), a fresh span id, the parent's trace state, flags 0. Making it
 * here skips what the SDK's startSpan does first and then throws away (the
 * attributes and links copied and sanitized, the sampler asked, the span-count
 * instrument, two ids from Math.random): about 2 µs of a span of the few
 * a call makes. Spans carry the same ids either way, so trace ids still reach
 * jobs, events and logs. With an exporter, a test processor, the SDK's own
 * span metrics (OTEL_NODE_EXPERIMENTAL_SDK_METRICS) or without the SDK, the
 * tracer starts every span.
 */
import { randomFillSync } from "node:crypto";
import {
  type Context,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  type Span,
  type SpanContext,
  type SpanOptions,
  TraceFlags,
  type Tracer,
  type TraceState,
  trace,
} from "@opentelemetry/api";
import { isTracingSuppressed } from "@opentelemetry/core";

let unrecorded = false;

/** Set by startTelemetry: true when the SDK runs and records no span (see above). */
export function setSpansUnrecorded(value: boolean): void {
  unrecorded = value;
}

/** Whether the SDK runs and records no span of this process (see above). */
export function spansUnrecorded(): boolean {
  return unrecorded;
}

/**
 * Random ids as lowercase hex, cut from a pool of random bytes turned into
 * hex at once (one crypto call and one hex conversion per 64 spans, not a
 * Buffer-to-hex call per id). An id is a slice of the pool's string, so one
 * kept keeps its pool (2 KB): small, to keep that small.
 */
const poolBytes = 1024;
let hexPool = "";
let hexOffset = 0;

/** A random id of `bytes` bytes as lowercase hex, never all zeros (W3C: invalid). */
function randomId(bytes: number): string {
  const chars = bytes * 2;
  for (;;) {
    if (hexOffset + chars > hexPool.length) {
      hexPool = randomFillSync(Buffer.allocUnsafe(poolBytes)).toString("hex");
      hexOffset = 0;
    }
    const id = hexPool.slice(hexOffset, hexOffset + chars);
    hexOffset += chars;
    for (let i = 0; i < id.length; i++) if (id.charCodeAt(i) !== 48) return id;
  }
}

/** The span contexts made here: valid by construction (fresh or a valid parent's trace id, a fresh span id). */
class MadeSpanContext implements SpanContext {
  readonly traceFlags = TraceFlags.NONE;
  constructor(
    readonly traceId: string,
    readonly spanId: string,
    readonly traceState: TraceState | undefined,
  ) {}
}

/**
 * isSpanContextValid, answered without its two regular expressions for the
 * contexts made here (the RPC's span, the enqueue's: every per-call check
 * of the hot paths).
 */
export function spanContextValid(sc: SpanContext): boolean {
  return sc instanceof MadeSpanContext || isSpanContextValid(sc);
}

/** tracer.startSpan(name, options, parent), without the SDK's work when no span is recorded. */
export function startSpan(
  tracer: Tracer,
  name: string,
  options: SpanOptions,
  parent: Context,
): Span {
  if (!unrecorded || options.root === true) return tracer.startSpan(name, options, parent);
  // As the SDK's Tracer does with the always-off sampler.
  if (isTracingSuppressed(parent)) return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
  const p = trace.getSpan(parent)?.spanContext();
  const valid = p !== undefined && spanContextValid(p);
  return trace.wrapSpanContext(
    new MadeSpanContext(
      valid ? p.traceId : randomId(16),
      randomId(8),
      valid ? p.traceState : undefined,
    ),
  );
}
