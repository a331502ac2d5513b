/**
 * The one interface between the worker and report code. A generator knows
 * nothing of BullMQ or Redis: it gets its input, a progress reporter and an
 * AbortSignal, and returns the report file. It may run more than once for the
 * same job (retries, a crashed worker), so it must be safe to repeat. Its
 * signal is how the worker stops it (cancel, timeout, shutdown, a lost job, a
 * refused or failed progress write): a generator doing long work watches it.
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

/**
 * Reports progress: `percent` 0-100, `phase` a short kebab-case name.
 *
 * It resolves once the report is queued or sent, not when it is stored: the
 * generator goes on while the write travels (one write in flight at a time:
 * a report after a quiet gap goes at once, or, while a write is in flight,
 * once that write was answered, and the call waits for that; reports are
 * stored in the order made, each its own event). A report that comes within
 * PROGRESS_LINGER_MS of the attempt's previous write (its start, or its last
 * progress write) is held up to that long and the reports made meanwhile
 * join it, one write for all; those still held when the generator returns
 * are written with its success, in one write, or not at all when that write
 * is refused. When the attempt ends otherwise (a failure, cancel, timeout,
 * shutdown, slow-down) they are written before its end, unless it lost its
 * job or a write of it failed: then they are never written.
 *
 * A write the worker finds refused (the attempt lost its job: its lock, or
 * another attempt took over) or failed (Redis unreachable) stops the attempt
 * through the generator's signal instead: the signal aborts with the reason
 * (`lockLostReason` of processor.ts for a lost job; the write's error, an
 * `AttemptStorageError` when Redis was away), and the next `progress()` call
 * rejects with it, as does the attempt's completion whatever the generator
 * returns. Nothing an attempt returns after a refused write is stored or
 * published. It also rejects with the signal's reason once the signal has
 * aborted for any other reason (cancel, timeout, shutdown).
 */
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

/**
 * Sleeps `ms`, rejecting with the signal's reason as soon as it aborts. No
 * wait at all for `ms` <= 0: Node runs a 0 ms timer no sooner than 1 ms
 * later, which made every phase of REPORT_PHASE_DELAY_MS=0 (no-op work)
 * cost a millisecond of wall time.
 */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return signal.aborted ? Promise.reject(signal.reason) : Promise.resolve();
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
