/**
 * histograms.ts: the producer's histograms read as the SDK's Histogram of the
 * same name, options and records (scope, descriptor, attributes, counts,
 * buckets, sum, min, max, temporality), and as the same Prometheus text.
 */
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";
import { afterEach, describe, expect, it } from "vitest";
import { type HistogramOptions, HistogramProducer } from "../../src/telemetry/histograms.js";

const options: HistogramOptions = {
  description: "a duration",
  unit: "s",
  advice: { explicitBucketBoundaries: [0.001, 0.01, 0.1, 1] },
};

/** Records: boundaries exactly, between them, past the last, zero, and what the SDK drops. */
const values = [0, 0.0005, 0.001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 100, -1, Number.NaN];

const providers: MeterProvider[] = [];
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.shutdown()));
});

/** Collects `record`'s measurements through the SDK's Histogram, or through the producer. */
async function collect(
  fast: boolean,
  record: (h: { record(v: number, a: Record<string, string | number>): void }) => void,
): Promise<ResourceMetrics> {
  const producer = new HistogramProducer();
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: 3_600_000,
    metricProducers: fast ? [producer] : [],
  });
  const provider = new MeterProvider({ readers: [reader] });
  providers.push(provider);
  const h = fast
    ? producer.histogram("scope-a", "test.duration", options)
    : provider.getMeter("scope-a").createHistogram("test.duration", options);
  record(h);
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  return resourceMetrics;
}

/** The collection without its times (start: first record; end: the collection). */
function timeless(rm: ResourceMetrics) {
  return rm.scopeMetrics
    .filter((s) => s.metrics.length > 0)
    .map((s) => ({
      scope: { name: s.scope.name, version: s.scope.version, schemaUrl: s.scope.schemaUrl },
      metrics: s.metrics.map((m) => ({
        ...m,
        descriptor: { ...m.descriptor },
        dataPoints: m.dataPoints.map((p) => ({ attributes: p.attributes, value: p.value })),
      })),
    }));
}

describe("HistogramProducer", () => {
  it("reads as the SDK's Histogram of the same records, series by attribute content", async () => {
    const a = { method: "Submit", code: 0 };
    const b = { code: 0, method: "Submit" }; // same set, another object, another key order
    const c = { method: "Get", code: 5 };
    const record = (h: { record(v: number, a: Record<string, string | number>): void }) => {
      for (const v of values) {
        h.record(v, a);
        h.record(v * 3, b);
      }
      h.record(0.02, c);
      h.record(0.02, { ...c });
    };
    const sdk = await collect(false, record);
    const ours = await collect(true, record);
    expect(timeless(ours)).toEqual(timeless(sdk));
    // One series per attribute set, as the SDK keeps them.
    expect(ours.scopeMetrics[0]?.metrics[0]?.dataPoints).toHaveLength(2);
    const serializer = new PrometheusSerializer();
    expect(serializer.serialize(ours)).toBe(serializer.serialize(sdk));
  });

  it("leaves out a histogram with no records yet, as the SDK does", async () => {
    const sdk = await collect(false, () => undefined);
    const ours = await collect(true, () => undefined);
    expect(timeless(ours)).toEqual(timeless(sdk));
  });

  it("keeps counting across collections (cumulative)", async () => {
    const producer = new HistogramProducer();
    const h = producer.histogram("scope-a", "test.duration", options);
    const a = { method: "Submit" };
    h.record(0.5, a);
    await producer.collect();
    h.record(0.05, a);
    const { resourceMetrics } = await producer.collect();
    const point = resourceMetrics.scopeMetrics[0]?.metrics[0]?.dataPoints[0];
    expect(point?.value).toMatchObject({ count: 2, sum: 0.55, min: 0.05, max: 0.5 });
    expect(producer.histogram("scope-a", "test.duration", options)).toBe(h);
  });
});
