import {
  createTraceState,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  ROOT_CONTEXT,
  SpanKind,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { suppressTracing } from "@opentelemetry/core";
import { AlwaysOffSampler, BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { afterEach, describe, expect, it } from "vitest";
import { setSpansUnrecorded, spanContextValid, startSpan } from "../../src/telemetry/spans.js";

// The SDK's tracer as telemetry.ts configures it when no span is recorded.
const sdkTracer = new BasicTracerProvider({ sampler: new AlwaysOffSampler() }).getTracer("t");
const options = { kind: SpanKind.SERVER, attributes: { "rpc.method": "SubmitReport" } };
const parentContext = trace.setSpan(
  ROOT_CONTEXT,
  trace.wrapSpanContext({
    traceId: "5af92f3577b34da6a3ce929d0e0e4737",
    spanId: "00f067aa0ba902b7",
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
    traceState: createTraceState("vendor=x"),
  }),
);

describe("startSpan() when no span is recorded", () => {
  afterEach(() => setSpansUnrecorded(false));

  it("makes the span the SDK's tracer makes: the parent's trace, a fresh span id, not recorded", () => {
    setSpansUnrecorded(true);
    for (const parent of [parentContext, ROOT_CONTEXT]) {
      const ours = startSpan(sdkTracer, "reports.v1.ReportService/SubmitReport", options, parent);
      const sdk = sdkTracer.startSpan("reports.v1.ReportService/SubmitReport", options, parent);
      expect(ours.isRecording()).toBe(false);
      expect(sdk.isRecording()).toBe(false);
      const o = ours.spanContext();
      const s = sdk.spanContext();
      expect(o.traceFlags).toBe(s.traceFlags);
      expect(o.traceState?.serialize()).toBe(s.traceState?.serialize());
      expect(o.isRemote).toBe(s.isRemote);
      expect(o.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(o.spanId).toMatch(/^[0-9a-f]{16}$/);
      expect(o.spanId).not.toBe("00f067aa0ba902b7");
      if (parent === parentContext) {
        expect(o.traceId).toBe(s.traceId);
      } else {
        expect(o.traceId).not.toBe(s.traceId);
      }
    }
  });

  it("answers spanContextValid as isSpanContextValid: its own spans' contexts valid, others checked", () => {
    setSpansUnrecorded(true);
    const root = startSpan(sdkTracer, "a", options, ROOT_CONTEXT).spanContext();
    const child = startSpan(sdkTracer, "b", options, parentContext).spanContext();
    expect([root, child].map((c) => [spanContextValid(c), isSpanContextValid(c)])).toEqual([
      [true, true],
      [true, true],
    ]);
    const others = [
      INVALID_SPAN_CONTEXT,
      trace.getSpan(parentContext)?.spanContext() ?? INVALID_SPAN_CONTEXT,
      { traceId: "0".repeat(32), spanId: "00f067aa0ba902b7", traceFlags: 0 },
      { traceId: "5af92f3577b34da6a3ce929d0e0e4737", spanId: "0".repeat(16), traceFlags: 0 },
      { traceId: "5AF92F3577B34DA6A3CE929D0E0E4737", spanId: "00f067aa0ba902b7", traceFlags: 0 },
      { ...root },
    ];
    expect(others.map(spanContextValid)).toEqual(others.map(isSpanContextValid));
    // Where tracing is suppressed: the invalid context, as the SDK's.
    const suppressed = startSpan(sdkTracer, "c", options, suppressTracing(parentContext));
    expect(spanContextValid(suppressed.spanContext())).toBe(false);
  });

  it("makes fresh ids for every span", () => {
    setSpansUnrecorded(true);
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const sc = startSpan(sdkTracer, "n", options, ROOT_CONTEXT).spanContext();
      ids.add(sc.traceId);
      ids.add(sc.spanId);
    }
    expect(ids.size).toBe(4000);
  });

  it("makes an invalid span where tracing is suppressed, as the SDK does", () => {
    setSpansUnrecorded(true);
    const suppressed = suppressTracing(parentContext);
    expect(startSpan(sdkTracer, "n", options, suppressed).spanContext()).toEqual(
      INVALID_SPAN_CONTEXT,
    );
    expect(sdkTracer.startSpan("n", options, suppressed).spanContext()).toEqual(
      INVALID_SPAN_CONTEXT,
    );
  });

  it("leaves spans to the tracer when spans are recorded", () => {
    const recording = new BasicTracerProvider().getTracer("t");
    const span = startSpan(recording, "n", options, parentContext);
    expect(span.isRecording()).toBe(true);
    expect(span.spanContext().traceId).toBe("5af92f3577b34da6a3ce929d0e0e4737");
    span.end();
  });
});
