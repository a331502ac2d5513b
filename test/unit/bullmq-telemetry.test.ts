/**
 * createBullTelemetry(): BullMQ's spans of a job (its consumer span and the
 * spans under it) start through startSpan, so when no span is recorded they
 * cost no SDK work and still carry the enqueue's trace id (the worker's log
 * lines read it from them).
 */
import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  AlwaysOffSampler,
  BasicTracerProvider,
  type Sampler,
  type SamplingResult,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  consumerContext,
  createBullTelemetry,
  workerBullTelemetry,
} from "../../src/telemetry/bullmq-telemetry.js";
import { setSpansUnrecorded } from "../../src/telemetry/spans.js";

/** The always-off sampler telemetry.ts uses without an exporter, counting its calls. */
class CountingSampler implements Sampler {
  calls = 0;
  private readonly off = new AlwaysOffSampler();
  shouldSample(): SamplingResult {
    this.calls++;
    return this.off.shouldSample();
  }
}

const sampler = new CountingSampler();
const enqueue = trace.setSpan(
  ROOT_CONTEXT,
  trace.wrapSpanContext({
    traceId: "5af92f3577b34da6a3ce929d0e0e4737",
    spanId: "00f067aa0ba902b7",
    traceFlags: TraceFlags.NONE,
    isRemote: true,
  }),
);

/** What BullMQ's trace() does for a job: its consumer span, then a span under it. */
function spansOfAJob(telemetry: ReturnType<typeof createBullTelemetry>, parent: Context) {
  const consumer = telemetry.tracer.startSpan(
    "process reports",
    { kind: SpanKind.CONSUMER },
    parent,
  );
  const inside = consumer.setSpanOnContext(parent);
  const complete = context.with(inside, () =>
    telemetry.tracer.startSpan("complete reports", { kind: SpanKind.INTERNAL }),
  );
  return [consumer, complete].map((s) => {
    const span = trace.getSpan(s.setSpanOnContext(ROOT_CONTEXT));
    if (span === undefined) throw new Error("no span on the context");
    return span;
  });
}

describe("createBullTelemetry()", () => {
  beforeAll(() => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(new BasicTracerProvider({ sampler }));
  });
  afterAll(() => {
    trace.disable();
    context.disable();
  });
  afterEach(() => setSpansUnrecorded(false));

  it("starts a job's spans without the SDK when no span is recorded, in the enqueue's trace", () => {
    setSpansUnrecorded(true);
    sampler.calls = 0;
    for (const span of spansOfAJob(createBullTelemetry(), enqueue)) {
      expect(span.isRecording()).toBe(false);
      expect(span.spanContext().traceId).toBe("5af92f3577b34da6a3ce929d0e0e4737");
      expect(span.spanContext().spanId).not.toBe("00f067aa0ba902b7");
    }
    expect(sampler.calls).toBe(0);
  });

  it("starts them with the SDK's tracer otherwise", () => {
    sampler.calls = 0;
    for (const span of spansOfAJob(createBullTelemetry(), enqueue)) {
      expect(span.spanContext().traceId).toBe("5af92f3577b34da6a3ce929d0e0e4737");
    }
    expect(sampler.calls).toBe(2);
  });

  it("records no internal span that would start a trace of its own", () => {
    sampler.calls = 0;
    const span = createBullTelemetry().tracer.startSpan(
      "getNextJob reports",
      { kind: SpanKind.INTERNAL },
      ROOT_CONTEXT,
    );
    expect(trace.getSpan(span.setSpanOnContext(ROOT_CONTEXT))?.spanContext().traceId).toBe(
      "00000000000000000000000000000000",
    );
    expect(sampler.calls).toBe(0);
  });
});

describe("workerBullTelemetry() and consumerContext()", () => {
  beforeAll(() => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(new BasicTracerProvider({ sampler }));
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  });
  afterAll(() => {
    trace.disable();
    context.disable();
    propagation.disable();
  });
  afterEach(() => setSpansUnrecorded(false));

  it("gives Workers no BullMQ telemetry when no span is recorded, BullMQ's otherwise", () => {
    setSpansUnrecorded(true);
    expect(workerBullTelemetry()).toBeUndefined();
    setSpansUnrecorded(false);
    expect(workerBullTelemetry()?.tracer).toBeDefined();
  });

  it("makes the consumer span in the trace of the job's metadata, as BullMQ's Worker does", () => {
    setSpansUnrecorded(true);
    sampler.calls = 0;
    const metadata = JSON.stringify({
      traceparent: "00-5af92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-00",
    });
    const first = trace.getSpan(consumerContext("reports-weekly", metadata))?.spanContext();
    const second = trace.getSpan(consumerContext("reports-weekly", metadata))?.spanContext();
    expect(first?.traceId).toBe("5af92f3577b34da6a3ce929d0e0e4737");
    expect(second?.traceId).toBe("5af92f3577b34da6a3ce929d0e0e4737");
    expect(first?.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(new Set([first?.spanId, second?.spanId, "00f067aa0ba902b7"]).size).toBe(3);
    expect(sampler.calls).toBe(0);
    // Without metadata, or with metadata that does not parse: a trace of its own.
    for (const none of [undefined, "", "{}", "not json"]) {
      const sc = trace.getSpan(consumerContext("reports-weekly", none))?.spanContext();
      expect(sc?.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(sc?.traceId).not.toBe("5af92f3577b34da6a3ce929d0e0e4737");
    }
  });

  it("makes it with the SDK's tracer when spans are recorded", () => {
    sampler.calls = 0;
    const metadata = JSON.stringify({
      traceparent: "00-5af92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-00",
    });
    const sc = trace.getSpan(consumerContext("reports-weekly", metadata))?.spanContext();
    expect(sc?.traceId).toBe("5af92f3577b34da6a3ce929d0e0e4737");
    expect(sampler.calls).toBe(1);
  });
});
