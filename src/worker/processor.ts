/**
 * Runs one attempt of one job: records STARTED, runs the report type's
 * generator with a progress reporter and an AbortSignal (cancel, shutdown,
 * run timeout or deadline), stores the file, records SUCCEEDED. On failure it
 * records RETRYING (with when the next attempt is due) or FAILED on the last
 * attempt, a permanent error or a passed deadline. Every record write is
 * guarded by the job's state, so a re-run of a finished or cancelled job
 * (after a crash, or a race with CancelJob) changes nothing.
 */
import { context, type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { RetentionConfig, WorkerConfig } from "../config/config.js";
import type { JobView, ReportType } from "../domain/job.js";
import { terminalStates } from "../domain/job.js";
import type { EventLog } from "../events/event-log.js";
import type { JobReader } from "../queue/job-reader.js";
import { encodeArtifact, recordField as f } from "../queue/job-record.js";
import { isStorageUnavailable } from "../queue/storage-errors.js";
import { attrAttempt, attrJobId, attrPhase, attrReportType } from "../telemetry/attributes.js";
import { type JobOutcome, reportMetrics } from "../telemetry/metrics.js";
import type { ArtifactStore } from "./artifact-store.js";
import {
  PermanentReportError,
  type ReportGenerator,
  SlowDownError,
  TransientReportError,
} from "./generator.js";

/** What the processor needs to know about a queued job (a BullMQ job fits). */
export interface AttemptContext {
  id: string;
  /** Failed attempts so far (BullMQ's attemptsMade). */
  attemptsMade: number;
  maxAttempts: number;
}

/** Settings of the processor: slices of the configuration. */
export interface ProcessorSettings {
  /** Each type's timeout, and the retry backoff. */
  worker: Pick<WorkerConfig, "reportTypes" | "retryBackoffMs">;
  retention: Pick<RetentionConfig, "succeededMs" | "failedMs">;
  random?: () => number;
}

/** How an attempt ended, for the queue adapter. */
export type AttemptOutcome =
  | { kind: "succeeded" | "skipped" | "cancelled" }
  /** The worker is stopping: the attempt was abandoned and the job goes back to the queue. */
  | { kind: "released" }
  /** The generator asked to slow down: pause this report type, requeue without using an attempt. */
  | { kind: "throttled"; delayMs: number }
  | { kind: "retry"; error: Error; delayMs: number }
  | { kind: "failed"; error: Error; permanent: boolean };

/** Runs attempts. */
export interface Processor {
  run(job: AttemptContext, signal: AbortSignal): Promise<AttemptOutcome>;
  /** Records FAILED for a job the queue failed on its own (e.g. stalled too often). */
  markFailed(jobId: string, attempt: number, reason: string): Promise<void>;
}

/** Abort reason: the worker is stopping; give the job back to the queue. */
export const releaseReason = "worker shutting down";

/** Abort reason: CancelJob asked for this job. */
export const cancelReason = "job cancelled";

/** The failure reason of jobs whose deadline passed. */
export const deadlineExceeded = "deadline exceeded";

/** Creates a processor. Generators are looked up by report type. */
export function createProcessor(deps: {
  log: EventLog;
  jobs: JobReader;
  generators: Record<ReportType, ReportGenerator>;
  artifacts: ArtifactStore;
  settings: ProcessorSettings;
  logger: Logger;
}): Processor {
  const { log, jobs, generators, artifacts, settings, logger } = deps;
  const random = settings.random ?? Math.random;

  /** One log line per state transition: never the filters or the report. */
  const transition = (
    job: JobView,
    state: string,
    attempt: number,
    extra: Record<string, unknown> = {},
  ) =>
    logger.info(
      {
        job_id: job.id,
        tenant: job.tenant,
        report_type: job.reportType,
        state,
        attempt,
        ...extra,
      },
      `job ${state}`,
    );

  const fail = async (job: JobView, attempt: number, reason: string) => {
    const now = Date.now();
    const failed = await log.append(
      job.id,
      {
        type: "failed",
        state: "failed",
        progress: job.progress,
        phase: job.phase,
        attempt,
        time: now,
        error: reason,
      },
      {
        recordUpdates: [f.state, "failed", f.failureReason, reason, f.finishedAt, String(now)],
        ttlMs: settings.retention.failedMs,
      },
    );
    if (failed.appended) {
      finished(job, "failed", now);
      transition(job, "failed", attempt, { phase: job.phase, reason });
    }
  };

  return {
    async run(ctx, signal) {
      const job = await jobs.get(ctx.id);
      // Gone (expired), finished by an earlier run, or cancelled: nothing to do.
      if (job === undefined || terminalStates.has(job.state)) return { kind: "skipped" };
      const attempt = ctx.attemptsMade + 1;
      if (job.deadline !== undefined && job.deadline <= Date.now()) {
        await fail(job, attempt - 1, deadlineExceeded);
        return { kind: "failed", error: new Error(deadlineExceeded), permanent: true };
      }
      const started = Date.now();
      const startedAppend = await log.append(
        job.id,
        {
          type: "started",
          state: "running",
          progress: 5,
          phase: "started",
          attempt,
          time: started,
        },
        {
          // biome-ignore format: field/value pairs
          recordUpdates: [
            f.state, "running", f.progress, "5", f.phase, "started", f.attemptsMade, String(attempt),
            f.maxAttempts, String(ctx.maxAttempts), f.startedAt, String(started), f.failureReason, "",
          ],
        },
      );
      if (!startedAppend.appended) return { kind: "skipped" };
      transition(job, "running", attempt, {
        queued_ms: started - (job.requeuedAt ?? job.createdAt),
      });

      const timeoutMs = settings.worker.reportTypes[job.reportType].timeoutMs;
      const timeout = AbortSignal.timeout(timeoutMs);
      const deadline =
        job.deadline !== undefined
          ? AbortSignal.timeout(Math.max(0, job.deadline - started))
          : undefined;
      const attemptSignal = AbortSignal.any(
        deadline ? [signal, timeout, deadline] : [signal, timeout],
      );
      let phase = "started";
      let progress = 5;
      const phases = createPhaseSpans(job, attempt);
      try {
        const output = await generators[job.reportType].generate(
          {
            jobId: job.id,
            userId: job.userId,
            reportType: job.reportType,
            filters: job.filters,
            attempt,
          },
          async (percent, newPhase) => {
            progress = Math.max(0, Math.min(99, Math.round(percent)));
            phase = newPhase;
            phases.enter(newPhase);
            attemptSignal.throwIfAborted();
            await ownStorage(() =>
              log.append(
                job.id,
                { type: "progress", state: "running", progress, phase, attempt, time: Date.now() },
                {
                  recordUpdates: [f.progress, String(progress), f.phase, phase],
                  allowedStates: ["running"],
                },
              ),
            );
          },
          attemptSignal,
        );
        attemptSignal.throwIfAborted();
        phases.enter("completed");
        const artifact = await artifacts.put(
          job.id,
          output.fileName,
          output.contentType,
          output.content,
        );
        const now = Date.now();
        const done = await ownStorage(() =>
          log.append(
            job.id,
            {
              type: "succeeded",
              state: "succeeded",
              progress: 100,
              phase: "completed",
              attempt,
              time: now,
              result: artifact,
            },
            {
              // biome-ignore format: field/value pairs
              recordUpdates: [
              f.state, "succeeded", f.progress, "100", f.phase, "completed", f.finishedAt, String(now),
              f.failureReason, "", ...encodeArtifact(artifact),
            ],
              allowedStates: ["running"],
              ttlMs: settings.retention.succeededMs,
            },
          ),
        );
        // Cancelled at the last moment: the job stays CANCELLED and its file goes.
        if (!done.appended) await artifacts.remove(job.id);
        else {
          finished(job, "succeeded", now);
          transition(job, "succeeded", attempt, {
            duration_ms: now - started,
            size_bytes: artifact.sizeBytes,
          });
        }
        phases.end();
        return { kind: "succeeded" };
      } catch (err) {
        // Released, cancelled or throttled attempts did not fail.
        const stopped =
          (signal.aborted && (signal.reason === releaseReason || signal.reason === cancelReason)) ||
          (err instanceof SlowDownError && !attemptSignal.aborted);
        if (stopped) phases.end();
        else phases.fail(err);
        if (signal.aborted && signal.reason === releaseReason) {
          await log.append(
            job.id,
            {
              type: "queued",
              state: "queued",
              progress: 0,
              phase: "released",
              attempt,
              time: Date.now(),
            },
            {
              // biome-ignore format: field/value pairs
              recordUpdates: [f.state, "queued", f.progress, "0", f.phase, "released", f.attemptsMade, String(attempt - 1)],
              allowedStates: ["running"],
            },
          );
          transition(job, "queued", attempt, { phase: "released" });
          return { kind: "released" };
        }
        if (signal.aborted && signal.reason === cancelReason) {
          await recordCancelled(job.id, progress, phase, attempt);
          transition(job, "cancelled", attempt, { phase });
          return { kind: "cancelled" };
        }
        if (err instanceof SlowDownError && !attemptSignal.aborted) {
          await log.append(
            job.id,
            {
              type: "queued",
              state: "queued",
              progress: 0,
              phase: "throttled",
              attempt,
              time: Date.now(),
              error: err.message,
            },
            {
              // biome-ignore format: field/value pairs
              recordUpdates: [f.state, "queued", f.progress, "0", f.phase, "throttled", f.attemptsMade, String(attempt - 1)],
              allowedStates: ["running"],
            },
          );
          transition(job, "queued", attempt, { phase: "throttled", delay_ms: err.retryAfterMs });
          return { kind: "throttled", delayMs: err.retryAfterMs };
        }
        const deadlinePassed = deadline?.aborted === true && !timeout.aborted;
        const permanent = err instanceof PermanentReportError || deadlinePassed;
        const reason = deadlinePassed
          ? deadlineExceeded
          : timeout.aborted
            ? `attempt timed out after ${timeoutMs} ms in phase ${phase}`
            : describeFailure(err, phase, logger, job.id);
        const error = new Error(reason);
        const delayMs = backoffDelay(settings.worker.retryBackoffMs, attempt, random);
        const now = Date.now();
        if (job.deadline !== undefined && now + delayMs >= job.deadline && !permanent) {
          await fail(
            { ...job, progress, phase },
            attempt,
            `${deadlineExceeded} (last error: ${reason})`,
          );
          return { kind: "failed", error, permanent: true };
        }
        if (permanent || attempt >= ctx.maxAttempts) {
          await fail({ ...job, progress, phase }, attempt, reason);
          return { kind: "failed", error, permanent };
        }
        await log.append(
          job.id,
          {
            type: "retrying",
            state: "retrying",
            progress,
            phase,
            attempt,
            time: now,
            error: reason,
            nextAttemptAt: now + delayMs,
          },
          {
            recordUpdates: [f.state, "retrying", f.failureReason, reason],
            allowedStates: ["running"],
          },
        );
        transition(job, "retrying", attempt, { phase, reason, delay_ms: delayMs });
        return { kind: "retry", error, delayMs };
      }
    },

    async markFailed(jobId, attempt, reason) {
      const job = await jobs.get(jobId);
      if (job === undefined || terminalStates.has(job.state)) return;
      await fail(job, attempt, reason);
    },
  };

  async function recordCancelled(jobId: string, progress: number, phase: string, attempt: number) {
    const job = await jobs.get(jobId);
    const reason = job?.cancelReason || "cancelled";
    const now = Date.now();
    const cancelled = await log.append(
      jobId,
      { type: "cancelled", state: "cancelled", progress, phase, attempt, time: now, error: reason },
      {
        recordUpdates: [f.state, "cancelled", f.failureReason, reason, f.finishedAt, String(now)],
        allowedStates: ["running"],
        ttlMs: settings.retention.failedMs,
      },
    );
    if (cancelled.appended && job !== undefined) finished(job, "cancelled", now);
    await artifacts.remove(jobId);
  }
}

/**
 * A failure of the worker's own Redis writes during an attempt (not of the
 * generator's downstream calls, whose errors may mention the same socket
 * errors): the attempt failed because storage was away.
 */
class AttemptStorageError extends Error {
  override readonly name = "AttemptStorageError";
}

/** Runs one of the worker's own storage calls, marking "storage unavailable" failures as such. */
async function ownStorage<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (isStorageUnavailable(err))
      throw new AttemptStorageError((err as Error).message, { cause: err });
    throw err;
  }
}

/**
 * Exponential backoff with jitter: base * 2^(attempt-1), scaled by a random
 * factor in [0.5, 1] so that jobs failing together do not retry together.
 */
export function backoffDelay(baseMs: number, attempt: number, random: () => number): number {
  const full = baseMs * 2 ** Math.min(attempt - 1, 20);
  return Math.round(full * (0.5 + 0.5 * random()));
}

/** A failure reason safe to show callers: generator errors say what they mean; anything else is logged. */
function describeFailure(err: unknown, phase: string, logger: Logger, jobId: string): string {
  if (err instanceof PermanentReportError || err instanceof TransientReportError)
    return err.message;
  if (err instanceof AttemptStorageError) {
    logger.warn({ err: err.message, jobId, phase }, "storage unavailable during attempt");
    return `storage unavailable in phase ${phase}`;
  }
  logger.error({ err, jobId, phase }, "report generator failed unexpectedly");
  return `internal error in phase ${phase}`;
}

/** The tracer of the worker's own spans. */
const tracer = trace.getTracer("report-jobs-worker");

/**
 * One child span per generator phase of an attempt ("phase started",
 * "phase fetch-data", ...), under the active (BullMQ consumer) span. A phase
 * lasts from the progress report that enters it to the one that leaves it;
 * "completed" covers storing the file and recording success.
 */
function createPhaseSpans(job: JobView, attempt: number) {
  const parent = context.active();
  const start = (phase: string): Span =>
    tracer.startSpan(
      `phase ${phase}`,
      {
        attributes: {
          [attrPhase]: phase,
          [attrJobId]: job.id,
          [attrReportType]: job.reportType,
          [attrAttempt]: attempt,
        },
      },
      parent,
    );
  let current: { phase: string; span: Span } | undefined = {
    phase: "started",
    span: start("started"),
  };
  return {
    enter(phase: string) {
      if (current?.phase === phase) return;
      current?.span.end();
      current = { phase, span: start(phase) };
    },
    end() {
      current?.span.end();
      current = undefined;
    },
    fail(err: unknown) {
      if (current === undefined) return;
      const error = err instanceof Error ? err : new Error(String(err));
      current.span.recordException(error);
      current.span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      current.span.end();
      current = undefined;
    },
  };
}

/** Records a job's terminal state: enqueue-to-finish latency and the outcome. */
function finished(job: JobView, outcome: JobOutcome, now: number): void {
  const queuedAt = job.requeuedAt ?? job.createdAt;
  reportMetrics().jobFinished(job.reportType, outcome, (now - queuedAt) / 1000);
}
