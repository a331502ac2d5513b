/**
 * The service's own metrics (OpenTelemetry instruments; the Prometheus
 * endpoint and OTLP export are set up in telemetry.ts). Names are dotted per
 * the OpenTelemetry conventions; Prometheus shows them with underscores, and
 * counters with _total (reports.job.duration → reports_job_duration_bucket,
 * reports.job.outcomes → reports_job_outcomes_total). Labels
 * are low-cardinality only: report type, outcome, state. Never a job id,
 * tenant or user.
 */
import {
  type Attributes,
  type Meter,
  metrics,
  type ObservableCounter,
  type ObservableResult,
} from "@opentelemetry/api";
import type { ReportType } from "../domain/job.js";
import { createHistogram } from "./histograms.js";

/** How a job ended. */
export type JobOutcome = "succeeded" | "failed" | "cancelled";

/** How one attempt ended. */
export type AttemptOutcome =
  | "succeeded"
  | "retry"
  | "failed"
  | "cancelled"
  | "released"
  | "throttled"
  | "skipped"
  /** The attempt lost its lock (or another attempt took its job over) and changed nothing. */
  | "lost";

/** How SubmitReport ended for the queue. */
export type SubmitOutcome = "accepted" | "deduplicated" | "rejected";

/** What the reconciler did to a live job nothing would have moved on. */
export type RepairKind = "requeued" | "failed" | "dropped";

/** What the reconciler found wrong with it. */
export type RepairCause =
  | "bullmq_job_missing"
  | "bullmq_job_completed"
  | "bullmq_job_failed"
  | "bullmq_job_stale"
  | "record_missing";

/** Label names (Prometheus keeps them as they are). */
export const labelReportType = "report_type";
export const labelOutcome = "outcome";
export const labelState = "state";
export const labelRepair = "repair";
export const labelCause = "cause";

/**
 * Enqueue-to-finish latency buckets, in seconds: jobs take seconds to
 * minutes (phases of ~0.5 s each by default, retries with backoff, a 5 min
 * default timeout), so the buckets are dense from 1 s to 5 min and reach 1 h
 * for backlogs.
 */
export const jobDurationBuckets = [
  0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600,
];

/**
 * SubmitReport latency buckets, in seconds: one Redis round trip, so
 * sub-millisecond to a few ms normally; the upper buckets catch a slow Redis.
 */
export const submitDurationBuckets = [
  0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/** The instruments the parts record on. */
export interface ReportMetrics {
  /** A job reached a terminal state; `seconds` since it was enqueued. */
  jobFinished(type: ReportType, outcome: JobOutcome, seconds: number): void;
  /** One attempt ended. */
  attemptEnded(type: ReportType, outcome: AttemptOutcome): void;
  /** SubmitReport's enqueue took `seconds`. */
  submitted(type: ReportType, outcome: SubmitOutcome, seconds: number): void;
  /** Observes queue depth by report type and state on every collection; returns the stop function. */
  observeQueueDepth(
    read: () => Promise<Array<{ type: ReportType; state: string; count: number }>>,
  ): () => void;
  /** Observes the number of open WatchJob streams; returns the stop function. */
  observeWatchers(read: () => number): () => void;
  /** The reconciler repaired a live job (worker/reconciler.ts). */
  repaired(type: ReportType | undefined, repair: RepairKind, cause: RepairCause): void;
}

/**
 * Creates the instruments on `meter`; by default the global provider's, with
 * reports.submit.duration (recorded on every submit) and reports.job.duration
 * (on every finished job) from histograms.ts.
 */
export function createReportMetrics(given?: Meter): ReportMetrics {
  const meter = given ?? metrics.getMeter("report-jobs");
  // Recorded once per job: histograms.ts's (no attribute hashing per record) unless a meter is given.
  const jobDurationOptions = {
    description: "Time from enqueue to the job's terminal state, by report type and outcome",
    unit: "s",
    advice: { explicitBucketBoundaries: jobDurationBuckets },
  };
  const jobDuration =
    given === undefined
      ? createHistogram("report-jobs", "reports.job.duration", jobDurationOptions)
      : meter.createHistogram("reports.job.duration", jobDurationOptions);
  // Two counters moved once per job each: counted here and observed at each
  // collection (the same monotonic sums), since the SDK sorts and
  // stringifies a measurement's attributes on every add.
  const jobOutcomes = countedByLabels(
    meter.createObservableCounter("reports.job.outcomes", {
      description: "Jobs that reached a terminal state, by report type and outcome",
      unit: "{job}",
    }),
  );
  const attempts = countedByLabels(
    meter.createObservableCounter("reports.job.attempts", {
      description:
        "Attempts that ended, by report type and outcome (retry: failed, another follows)",
      unit: "{attempt}",
    }),
  );
  const submitDurationOptions = {
    description: "SubmitReport's enqueue (one Redis round trip), by report type and outcome",
    unit: "s",
    advice: { explicitBucketBoundaries: submitDurationBuckets },
  };
  const submitDuration =
    given === undefined
      ? createHistogram("report-jobs", "reports.submit.duration", submitDurationOptions)
      : meter.createHistogram("reports.submit.duration", submitDurationOptions);
  const idempotentHits = meter.createCounter("reports.submit.idempotent_hits", {
    description:
      "SubmitReport calls answered with the job already created under the same idempotency key",
    unit: "{request}",
  });
  const queueDepth = meter.createObservableGauge("reports.queue.depth", {
    description: "Jobs in the BullMQ queues, by report type and state",
    unit: "{job}",
  });
  const repairs = meter.createCounter("reports.reconciler.repairs", {
    description:
      "Live jobs the reconciler repaired (their BullMQ job missing or finished), by report type, repair and cause",
    unit: "{job}",
  });
  const watchers = meter.createObservableGauge("reports.watchers.active", {
    description: "Open WatchJob streams in this process",
    unit: "{stream}",
  });

  // Label sets are few (report type x outcome): built once each, not per record.
  const byType = new Map<string, { type: Attributes; outcomes: Map<string, Attributes> }>();
  const labelsOf = (type: string) => {
    let entry = byType.get(type);
    if (entry === undefined) {
      entry = { type: { [labelReportType]: type }, outcomes: new Map() };
      byType.set(type, entry);
    }
    return entry;
  };
  const typeOnly = (type: string): Attributes => labelsOf(type).type;
  const typeOutcome = (type: string, outcome: string): Attributes => {
    const { outcomes } = labelsOf(type);
    let labels = outcomes.get(outcome);
    if (labels === undefined) {
      labels = { [labelReportType]: type, [labelOutcome]: outcome };
      outcomes.set(outcome, labels);
    }
    return labels;
  };

  return {
    jobFinished(type, outcome, seconds) {
      const labels = typeOutcome(type, outcome);
      jobDuration.record(Math.max(0, seconds), labels);
      jobOutcomes.add(1, labels);
    },
    attemptEnded(type, outcome) {
      attempts.add(1, typeOutcome(type, outcome));
    },
    submitted(type, outcome, seconds) {
      submitDuration.record(seconds, typeOutcome(type, outcome));
      if (outcome === "deduplicated") idempotentHits.add(1, typeOnly(type));
    },
    observeQueueDepth(read) {
      const callback = async (result: ObservableResult) => {
        try {
          for (const { type, state, count } of await read()) {
            result.observe(count, { [labelReportType]: type, [labelState]: state });
          }
        } catch {
          // Redis unreachable: no sample this time (absent, not zero).
        }
      };
      queueDepth.addCallback(callback);
      return () => queueDepth.removeCallback(callback);
    },
    repaired(type, repair, cause) {
      repairs.add(1, {
        ...(type === undefined ? {} : { [labelReportType]: type }),
        [labelRepair]: repair,
        [labelCause]: cause,
      });
    },
    observeWatchers(read) {
      const callback = (result: ObservableResult) => result.observe(read());
      watchers.addCallback(callback);
      return () => watchers.removeCallback(callback);
    },
  };
}

/**
 * A monotonic count per label set, kept here and reported by `counter` at
 * each collection: what a Counter's `add` reports, without the SDK's work
 * per add. Label sets must be the same objects each time (they are cached
 * above); their number is small (report type x outcome).
 */
function countedByLabels(counter: ObservableCounter): {
  add(value: number, labels: Attributes): void;
} {
  const counts = new Map<Attributes, number>();
  counter.addCallback((result) => {
    for (const [labels, count] of counts) result.observe(count, labels);
  });
  return {
    add(value, labels) {
      counts.set(labels, (counts.get(labels) ?? 0) + value);
    },
  };
}

let shared: ReportMetrics | undefined;

/**
 * The process's instruments, created on first use from the global meter
 * provider, so the SDK must be started before (the preload does; tests
 * start theirs first).
 */
export function reportMetrics(): ReportMetrics {
  shared ??= createReportMetrics();
  return shared;
}
