/**
 * The one interface between the worker and report code. A generator knows
 * nothing of BullMQ or Redis: it gets its input, a progress reporter and an
 * AbortSignal, and returns the report file. It may run more than once for the
 * same job (retries, a crashed worker), so it must be safe to repeat.
 */
import type { JsonObject, ReportType } from "../domain/job.js";

/** What a generator is asked to build. */
export interface ReportInput {
  jobId: string;
  userId: string;
  reportType: ReportType;
  filters: JsonObject;
  /** 1-based attempt number. */
  attempt: number;
}

/** Reports progress: `percent` 0-100, `phase` a short kebab-case name. */
export type ProgressReporter = (percent: number, phase: string) => Promise<void>;

/** The finished report file. */
export interface ReportOutput {
  fileName: string;
  contentType: string;
  content: string | Uint8Array;
}

/** Builds one report type. */
export interface ReportGenerator {
  generate(
    input: ReportInput,
    progress: ProgressReporter,
    signal: AbortSignal,
  ): Promise<ReportOutput>;
}

/** A failure that another attempt cannot fix (bad filters, say): the job fails at once. */
export class PermanentReportError extends Error {
  override readonly name = "PermanentReportError";
}

/** A failure worth retrying (a downstream hiccup); its message is shown to callers. */
export class TransientReportError extends Error {
  override readonly name = "TransientReportError";
}

/** Sleeps `ms`, rejecting with the signal's reason as soon as it aborts. */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The downstream is saturated: stop taking jobs of this report type for
 * `retryAfterMs`. The job goes back to the queue without using an attempt.
 */
export class SlowDownError extends Error {
  override readonly name = "SlowDownError";
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}
