/**
 * What each piece of telemetry costs a call, in one process, with the SDK
 * started as `npm start` starts it without an exporter (non-recording spans,
 * the Prometheus reader): the span of an RPC (the SDK's tracer and
 * telemetry/spans.ts), the traceparent's extraction and the enqueue's
 * injection, a histogram record with a cached attribute set, and what
 * AsyncLocalStorage's promise hooks add to a chain of awaits once any context
 * has been entered (Node 20: they then run for every promise of the process).
 * The histogram of histograms.ts too (what the routes record on).
 * Medians of 5 runs; a submit makes 2 spans, 2 histogram records and about
 * 24 awaits of its own.
 *
 *   npx tsx bench/telemetry-micro.ts
 */
import { context, metrics, propagation, ROOT_CONTEXT, SpanKind, trace } from "@opentelemetry/api";
import { rpcDurationBuckets } from "../src/api/telemetry-interceptor.js";
import { loadTelemetrySettings } from "../src/config/config.js";
import { createHistogram } from "../src/telemetry/histograms.js";
import { setSpansUnrecorded, startSpan } from "../src/telemetry/spans.js";
import { startTelemetry } from "../src/telemetry/telemetry.js";

async function awaits24(): Promise<void> {
  for (let i = 0; i < 24; i++) await null;
}

/** µs per call of an async chain, median of 5 runs. */
async function asyncCost(n: number): Promise<number> {
  const runs: number[] = [];
  for (let r = 0; r < 6; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await awaits24();
    if (r > 0) runs.push(Number(process.hrtime.bigint() - t) / n / 1000);
  }
  return runs.sort((a, b) => a - b)[2] ?? 0;
}

function bench(name: string, n: number, f: () => unknown): void {
  for (let i = 0; i < n / 5; i++) f();
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
    runs.push(Number(process.hrtime.bigint() - t) / n / 1000);
  }
  console.log(`${name.padEnd(48)} ${(runs.sort((a, b) => a - b)[2] ?? 0).toFixed(3)} µs`);
}

// Before the SDK: no AsyncLocalStorage has been entered yet.
const plain = await asyncCost(20_000);
startTelemetry({ settings: loadTelemetrySettings({}, "api") });
const tracer = trace.getTracer("bench");
const options = {
  kind: SpanKind.SERVER,
  attributes: {
    "rpc.system": "connect_rpc",
    "rpc.service": "reports.v1.ReportService",
    "rpc.method": "SubmitReport",
    "rpc.protocol": "connect",
  },
};
const carrier = { traceparent: "00-5af92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01" };
const parent = propagation.extract(ROOT_CONTEXT, carrier);
bench("extract the caller's traceparent", 200_000, () =>
  propagation.extract(ROOT_CONTEXT, carrier),
);
setSpansUnrecorded(false);
bench("span start + end, the SDK's tracer", 200_000, () =>
  startSpan(tracer, "n", options, parent).end(),
);
setSpansUnrecorded(true);
bench("span start + end, spans.ts (as shipped)", 200_000, () =>
  startSpan(tracer, "n", options, parent).end(),
);
const span = startSpan(tracer, "n", options, parent);
const ctx = trace.setSpan(parent, span);
bench("inject the enqueue's carrier + JSON", 200_000, () => {
  const c: Record<string, string> = {};
  propagation.inject(ctx, c);
  return JSON.stringify(c);
});
const histogram = metrics.getMeter("bench").createHistogram("bench.duration", { unit: "s" });
const attributes = { ...options.attributes, "rpc.grpc.status_code": 0 };
bench("histogram record, cached attributes", 200_000, () => histogram.record(0.001, attributes));
const fast = createHistogram("bench", "bench.fast.duration", {
  description: "",
  unit: "s",
  advice: { explicitBucketBoundaries: rpcDurationBuckets },
});
bench("histogram record, histograms.ts (as shipped)", 200_000, () =>
  fast.record(0.001, attributes),
);
bench("trace.getActiveSpan() (the log mixin)", 200_000, () => trace.getActiveSpan());
await context.with(ctx, async () => {
  const withHooks = await asyncCost(20_000);
  console.log(
    `${"24 awaits: no ALS / ALS entered (promise hooks)".padEnd(48)} ${plain.toFixed(3)} / ${withHooks.toFixed(3)} µs`,
  );
});
process.exit(0);
