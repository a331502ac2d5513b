/**
 * The submitter's settings for tests that make a submitter of their own
 * (createSubmitter over a test Redis): the configuration's slices with
 * small, fixed values; each test sets what it is about.
 */
import type { ReportTypeSettings } from "../../src/config/config.js";
import type { ReportType } from "../../src/domain/job.js";
import type { SubmitterSettings } from "../../src/queue/submitter.js";

/** The same settings for every report type. */
export function sameForEveryType(s: ReportTypeSettings): Record<ReportType, ReportTypeSettings> {
  return { weekly: s, monthly: s, custom: s };
}

/**
 * Settings with `attempts` per job (every type), no submit rate limit, a
 * backlog bound of 1,000 per tenant and `maxBacklog` (1,000) in all, a one
 * minute retention, and no AOF wait.
 */
export function testSubmitterSettings(options: {
  attempts: number;
  maxBacklog?: number;
  idempotencyTtlMs?: number;
}): SubmitterSettings {
  return {
    worker: {
      reportTypes: sameForEveryType({
        attempts: options.attempts,
        timeoutMs: 60_000,
        concurrency: 1,
      }),
      retryBackoffMs: 1000,
    },
    retention: {
      idempotencyTtlMs: options.idempotencyTtlMs ?? 60_000,
      succeededMs: 60_000,
      failedMs: 60_000,
      eventStreamMaxLen: 100,
    },
    limits: {
      maxBacklog: options.maxBacklog ?? 1000,
      tenantMaxBacklog: 1000,
      backlogRetryAfterMs: 1000,
      tenantSubmitRate: 0,
      tenantSubmitBurst: 1,
    },
    redis: { submitWaitAof: 0 },
  };
}
