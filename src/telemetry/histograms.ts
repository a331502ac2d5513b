/**
 * Histograms recorded on every call (rpc.server.call.duration,
 * reports.submit.duration) without the SDK's work per record: the SDK's
 * Histogram asks the context manager for the active context, then sorts and
 * JSON-stringifies the measurement's attribute set to find its series, about
 * 3 µs a record. Here each attribute object finds its series once (by the
 * same content key, so equal sets from different objects are one series)
 * and a record is a WeakMap lookup and a bucket count. The series are read
 * by the metric readers through a MetricProducer (the readers'
 * `metricProducers`), as the SDK's own: same names, units, descriptions,
 * buckets, scope, attributes, count, sum, min and max; cumulative.
 *
 * startTelemetry installs the producer only when every reader wants
 * cumulative histograms (Prometheus; OTLP unless its temporality preference
 * says delta) and no test hands in readers of its own; otherwise, and
 * without the SDK, `createHistogram` returns the meter's Histogram.
 */
import { type Attributes, type HrTime, metrics, ValueType } from "@opentelemetry/api";
import { millisToHrTime } from "@opentelemetry/core";
import { emptyResource } from "@opentelemetry/resources";
import {
  AggregationTemporality,
  type CollectionResult,
  DataPointType,
  type Histogram as HistogramValue,
  InstrumentType,
  type MetricData,
  type MetricProducer,
} from "@opentelemetry/sdk-metrics";

/** What a histogram is made with (the meter's createHistogram options, buckets required). */
export interface HistogramOptions {
  description: string;
  unit: string;
  advice: { explicitBucketBoundaries: number[] };
}

/** The one method the callers use. */
export interface RecordingHistogram {
  record(value: number, attributes: Attributes): void;
}

/** One attribute set's counts (cumulative since its first record). */
interface Series {
  attributes: Attributes;
  startTime: HrTime;
  count: number;
  sum: number;
  min: number;
  max: number;
  counts: number[];
}

/** A histogram's series. */
class FastHistogram implements RecordingHistogram {
  private readonly byObject = new WeakMap<Attributes, Series>();
  private readonly byKey = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly options: HistogramOptions,
  ) {}

  record(value: number, attributes: Attributes): void {
    // As the SDK's Histogram: negative values and NaN are dropped.
    if (typeof value !== "number" || value < 0 || Number.isNaN(value)) return;
    const series = this.byObject.get(attributes) ?? this.seriesOf(attributes);
    series.count += 1;
    series.sum += value;
    if (value < series.min) series.min = value;
    if (value > series.max) series.max = value;
    // The first boundary >= value (the SDK's binarySearchUB); past the last: the overflow bucket.
    const bounds = this.options.advice.explicitBucketBoundaries;
    let i = 0;
    while (i < bounds.length && (bounds[i] as number) < value) i++;
    (series.counts[i] as number)++;
  }

  private seriesOf(attributes: Attributes): Series {
    // The SDK's key: the attribute set's entries sorted by name, as JSON.
    const key = JSON.stringify(
      Object.keys(attributes)
        .sort()
        .map((k) => [k, attributes[k]]),
    );
    let series = this.byKey.get(key);
    if (series === undefined) {
      series = {
        attributes: { ...attributes },
        startTime: millisToHrTime(Date.now()),
        count: 0,
        sum: 0,
        min: Number.POSITIVE_INFINITY,
        max: Number.NEGATIVE_INFINITY,
        counts: new Array<number>(this.options.advice.explicitBucketBoundaries.length + 1).fill(0),
      };
      this.byKey.set(key, series);
    }
    this.byObject.set(attributes, series);
    return series;
  }

  /** Whether it has a series. */
  get recorded(): boolean {
    return this.byKey.size > 0;
  }

  /** The SDK's HistogramMetricData of the series, read at `endTime`. */
  data(endTime: HrTime): MetricData {
    const boundaries = this.options.advice.explicitBucketBoundaries;
    return {
      descriptor: {
        name: this.name,
        type: InstrumentType.HISTOGRAM,
        description: this.options.description,
        unit: this.options.unit,
        valueType: ValueType.DOUBLE,
        advice: this.options.advice,
      } as MetricData["descriptor"],
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: [...this.byKey.values()].map((s) => ({
        attributes: s.attributes,
        startTime: s.startTime,
        endTime,
        value: {
          min: s.count > 0 ? s.min : undefined,
          max: s.count > 0 ? s.max : undefined,
          sum: s.sum,
          buckets: { boundaries, counts: [...s.counts] },
          count: s.count,
        } satisfies HistogramValue,
      })),
    };
  }
}

/** The histograms of this process, by scope (meter name), and their producer. */
export class HistogramProducer implements MetricProducer {
  private readonly scopes = new Map<string, FastHistogram[]>();

  /** A histogram of scope `meter` (one per name: a second call returns the first). */
  histogram(meter: string, name: string, options: HistogramOptions): RecordingHistogram {
    let list = this.scopes.get(meter);
    if (list === undefined) {
      list = [];
      this.scopes.set(meter, list);
    }
    let h = list.find((x) => x.name === name);
    if (h === undefined) {
      h = new FastHistogram(name, options);
      list.push(h);
    }
    return h;
  }

  async collect(): Promise<CollectionResult> {
    const endTime = millisToHrTime(Date.now());
    return {
      resourceMetrics: {
        // The reader keeps the SDK's resource.
        resource: emptyResource(),
        // As the SDK's: a histogram without records yet is left out, and
        // the scope of a meter got by name has version "".
        scopeMetrics: [...this.scopes]
          .map(([name, list]) => ({
            scope: { name, version: "" },
            metrics: list.filter((h) => h.recorded).map((h) => h.data(endTime)),
          }))
          .filter((s) => s.metrics.length > 0),
      },
      errors: [],
    };
  }
}

let producer: HistogramProducer | undefined;

/** Set by startTelemetry when its readers read `p` (see above); undefined: the SDK's histograms. */
export function setHistogramProducer(p: HistogramProducer | undefined): void {
  producer = p;
}

/**
 * A histogram named `name` on the meter `meter`: the producer's when one is
 * installed, else the meter's (the global provider's).
 */
export function createHistogram(
  meter: string,
  name: string,
  options: HistogramOptions,
): RecordingHistogram {
  if (producer !== undefined) return producer.histogram(meter, name, options);
  return metrics.getMeter(meter).createHistogram(name, options);
}
