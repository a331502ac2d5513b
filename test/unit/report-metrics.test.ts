/**
 * createReportMetrics(): the per-job counters (reports.job.outcomes,
 * reports.job.attempts) are counted in the process and observed at each
 * collection; a reader sees the monotonic sums a Counter would report.
 */
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";
import { afterEach, describe, expect, it } from "vitest";
import { HistogramProducer, setHistogramProducer } from "../../src/telemetry/histograms.js";
import { createReportMetrics, jobDurationBuckets } from "../../src/telemetry/metrics.js";

/** A provider with a reader collected on demand. */
function setup(temporality: AggregationTemporality) {
  const exporter = new InMemoryMetricExporter(temporality);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const provider = new MeterProvider({ readers: [reader] });
  const collect = async (): Promise<ResourceMetrics> => {
    const { resourceMetrics, errors } = await reader.collect();
    expect(errors).toEqual([]);
    return resourceMetrics;
  };
  return { provider, metrics: createReportMetrics(provider.getMeter("report-jobs")), collect };
}

/** The data points of metric `name`: [attributes, value]. */
function points(rm: ResourceMetrics, name: string) {
  const metric = rm.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  if (metric === undefined) return undefined;
  expect(metric.dataPointType).toBe(DataPointType.SUM);
  expect(metric.dataPointType === DataPointType.SUM && metric.isMonotonic).toBe(true);
  return metric.dataPoints.map((p) => [p.attributes, p.value]);
}

const providers: MeterProvider[] = [];
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.shutdown()));
});

describe("createReportMetrics()", () => {
  it("reports the job counters as monotonic sums by report type and outcome", async () => {
    const { provider, metrics, collect } = setup(AggregationTemporality.CUMULATIVE);
    providers.push(provider);
    expect(points(await collect(), "reports.job.outcomes")).toBeUndefined();
    metrics.jobFinished("weekly", "succeeded", 0.2);
    metrics.jobFinished("weekly", "succeeded", 0.3);
    metrics.jobFinished("custom", "failed", 1);
    metrics.attemptEnded("weekly", "succeeded");
    metrics.attemptEnded("custom", "retry");
    metrics.attemptEnded("custom", "retry");
    let rm = await collect();
    expect(points(rm, "reports.job.outcomes")).toEqual(
      expect.arrayContaining([
        [{ report_type: "weekly", outcome: "succeeded" }, 2],
        [{ report_type: "custom", outcome: "failed" }, 1],
      ]),
    );
    expect(points(rm, "reports.job.outcomes")).toHaveLength(2);
    expect(points(rm, "reports.job.attempts")).toEqual(
      expect.arrayContaining([
        [{ report_type: "weekly", outcome: "succeeded" }, 1],
        [{ report_type: "custom", outcome: "retry" }, 2],
      ]),
    );
    metrics.jobFinished("weekly", "succeeded", 0.1);
    rm = await collect();
    expect(points(rm, "reports.job.outcomes")).toEqual(
      expect.arrayContaining([[{ report_type: "weekly", outcome: "succeeded" }, 3]]),
    );
  });

  it("reports what was added since the last collection to a delta reader", async () => {
    const { provider, metrics, collect } = setup(AggregationTemporality.DELTA);
    providers.push(provider);
    metrics.attemptEnded("monthly", "lost");
    metrics.attemptEnded("monthly", "lost");
    expect(points(await collect(), "reports.job.attempts")).toEqual([
      [{ report_type: "monthly", outcome: "lost" }, 2],
    ]);
    metrics.attemptEnded("monthly", "lost");
    expect(points(await collect(), "reports.job.attempts")).toEqual([
      [{ report_type: "monthly", outcome: "lost" }, 1],
    ]);
  });

  it("records reports.job.duration through the process's histogram producer when one is installed", async () => {
    const producer = new HistogramProducer();
    setHistogramProducer(producer);
    try {
      const metrics = createReportMetrics();
      metrics.jobFinished("weekly", "succeeded", 0.3);
      metrics.jobFinished("weekly", "succeeded", 4);
      metrics.jobFinished("weekly", "failed", -1);
      const { resourceMetrics } = await producer.collect();
      const [scope] = resourceMetrics.scopeMetrics;
      expect(scope?.scope).toEqual({ name: "report-jobs", version: "" });
      const [metric] = scope?.metrics ?? [];
      expect(metric?.descriptor).toMatchObject({ name: "reports.job.duration", unit: "s" });
      expect(
        metric?.dataPoints.map((p) => [p.attributes, (p.value as { count: number }).count]),
      ).toEqual([
        [{ report_type: "weekly", outcome: "succeeded" }, 2],
        [{ report_type: "weekly", outcome: "failed" }, 1],
      ]);
      expect(metric?.dataPoints[0]?.value).toMatchObject({
        buckets: { boundaries: jobDurationBuckets },
      });
    } finally {
      setHistogramProducer(undefined);
    }
  });
});
