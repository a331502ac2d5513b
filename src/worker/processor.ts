/**
 * Runs one attempt of one job: records STARTED, runs the report type's
 * generator with a progress reporter and an AbortSignal (cancel, shutdown,
 * run timeout or deadline), stores the file, records SUCCEEDED. On failure it
 * records RETRYING (with when the next attempt is due) or FAILED on the last
 * attempt, a permanent error or a passed deadline. Each of these is one
 * transition of domain/job-transitions.ts, applied atomically and guarded by
 * the job's state, so a re-run of a finished or cancelled job (after a crash,
 * or a race with CancelJob) changes nothing; and by the attempt's fencing
 * token, so once another attempt of the job has started, this one's writes
 * change nothing either.
 */
import { randomBytes } from "node:crypto";
import { context, type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { WorkerConfig } from "../config/config.js";
import type { JobView, ReportType } from "../domain/job.js";
import { terminalStates } from "../domain/job.js";
import { type AttemptWrite, attemptStart, type Position } from "../domain/job-transitions.js";
import type { JobReader } from "../queue/job-reader.js";
import { isStorageUnavailable } from "../queue/storage-errors.js";
import type { TransitionApplier } from "../queue/transition-applier.js";
import { attrAttempt, attrJobId, attrPhase, attrReportType } from "../telemetry/attributes.js";
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

/** Settings of the processor. */
export interface ProcessorSettings {
  /** Each type's timeout, and the retry backoff. */
  worker: Pick<WorkerConfig, "reportTypes" | "retryBackoffMs">;
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
  transitions: TransitionApplier;
  jobs: JobReader;
  generators: Record<ReportType, ReportGenerator>;
  artifacts: ArtifactStore;
  settings: ProcessorSettings;
  logger: Logger;
}): Processor {
  const { transitions, jobs, generators, artifacts, settings, logger } = deps;
  const random = settings.random ?? Math.random;

  return {
    async run(ctx, signal) {
      const job = await jobs.get(ctx.id);
      // Gone (expired), finished by an earlier run, or cancelled: nothing to do.
      if (job === undefined || terminalStates.has(job.state)) return { kind: "skipped" };
      const attempt = ctx.attemptsMade + 1;
      if (job.deadline !== undefined && job.deadline <= Date.now()) {
        await abandon(job, attempt - 1, deadlineExceeded);
        return { kind: "failed", error: new Error(deadlineExceeded), permanent: true };
      }
      // Every write of this attempt carries its fencing token.
      const own = { attempt, token: randomBytes(12).toString("base64url") };
      const startedAt = Date.now();
      const started = await transitions.apply(job, "started", {
        ...own,
        at: startedAt,
        maxAttempts: ctx.maxAttempts,
      });
      if (!started.applied) return { kind: "skipped" };

      const limits = attemptLimits(
        job,
        startedAt,
        signal,
        settings.worker.reportTypes[job.reportType].timeoutMs,
      );
      const where: Position = { ...attemptStart };
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
          async (percent, phase) => {
            where.progress = Math.max(0, Math.min(99, Math.round(percent)));
            where.phase = phase;
            phases.enter(phase);
            limits.signal.throwIfAborted();
            await ownStorage(() =>
              transitions.apply(job, "progress", { ...own, ...where, at: Date.now() }),
            );
          },
          limits.signal,
        );
        limits.signal.throwIfAborted();
        phases.enter("completed");
        const artifact = await artifacts.put(
          job.id,
          output.fileName,
          output.contentType,
          output.content,
        );
        const done = await ownStorage(() =>
          transitions.apply(job, "succeeded", { ...own, at: Date.now(), startedAt, artifact }),
        );
        // Cancelled at the last moment: the job stays CANCELLED and its file goes.
        if (!done.applied) await artifacts.remove(job.id);
        phases.end();
        return { kind: "succeeded" };
      } catch (err) {
        const stop = stopOf(err, signal, limits.signal);
        if (stop !== undefined) phases.end();
        else phases.fail(err);
        switch (stop) {
          case "released":
            await transitions.apply(job, "released", { ...own, at: Date.now() });
            return { kind: "released" };
          case "cancelled":
            await recordCancelled(job, { ...own, ...where });
            return { kind: "cancelled" };
          case "throttled": {
            const { message, retryAfterMs } = err as SlowDownError;
            await transitions.apply(job, "throttled", {
              ...own,
              at: Date.now(),
              reason: message,
              retryAfterMs,
            });
            return { kind: "throttled", delayMs: retryAfterMs };
          }
          case undefined:
            return recordFailure(job, { ...own, ...where }, err, limits, ctx.maxAttempts);
        }
      }
    },

    async markFailed(jobId, attempt, reason) {
      const job = await jobs.get(jobId);
      if (job === undefined || terminalStates.has(job.state)) return;
      await abandon(job, attempt, reason);
    },
  };

  /** Fails a job outside an attempt (not fenced). */
  async function abandon(job: JobView, attempt: number, reason: string) {
    const { progress, phase } = job;
    await transitions.apply(job, "abandoned", { attempt, progress, phase, at: Date.now(), reason });
  }

  /** A failed attempt: RETRYING with the next attempt's time, or FAILED when no attempt follows. */
  async function recordFailure(
    job: JobView,
    place: AttemptPlace,
    err: unknown,
    limits: AttemptLimits,
    maxAttempts: number,
  ): Promise<AttemptOutcome> {
    const deadlinePassed = limits.deadline?.aborted === true && !limits.timeout.aborted;
    const permanent = err instanceof PermanentReportError || deadlinePassed;
    const reason = deadlinePassed
      ? deadlineExceeded
      : limits.timeout.aborted
        ? `attempt timed out after ${limits.timeoutMs} ms in phase ${place.phase}`
        : describeFailure(err, place.phase, logger, job.id);
    const error = new Error(reason);
    const delayMs = backoffDelay(settings.worker.retryBackoffMs, place.attempt, random);
    const now = Date.now();
    if (job.deadline !== undefined && now + delayMs >= job.deadline && !permanent) {
      const last = `${deadlineExceeded} (last error: ${reason})`;
      await transitions.apply(job, "failed", { ...place, at: now, reason: last });
      return { kind: "failed", error, permanent: true };
    }
    if (permanent || place.attempt >= maxAttempts) {
      await transitions.apply(job, "failed", { ...place, at: now, reason });
      return { kind: "failed", error, permanent };
    }
    const nextAttemptAt = now + delayMs;
    await transitions.apply(job, "retrying", { ...place, at: now, reason, nextAttemptAt });
    return { kind: "retry", error, delayMs };
  }

  /** CANCELLED with the reason CancelJob gave; the attempt's file (if any) goes. */
  async function recordCancelled(job: JobView, place: AttemptPlace) {
    const current = await jobs.get(job.id);
    const reason = current?.cancelReason || "cancelled";
    await transitions.apply(current ?? job, "cancelled", { ...place, at: Date.now(), reason });
    await artifacts.remove(job.id);
  }
}

/** An attempt (number and fencing token) and where it was when it stopped. */
type AttemptPlace = Omit<AttemptWrite, "at"> & Position;

/** Why an attempt stopped without failing: released, cancelled or throttled; undefined for a failure. */
function stopOf(
  err: unknown,
  signal: AbortSignal,
  attemptSignal: AbortSignal,
): "released" | "cancelled" | "throttled" | undefined {
  if (signal.aborted && signal.reason === releaseReason) return "released";
  if (signal.aborted && signal.reason === cancelReason) return "cancelled";
  if (err instanceof SlowDownError && !attemptSignal.aborted) return "throttled";
  return undefined;
}

/** The signals that end an attempt: the worker's (cancel, shutdown), the run timeout, the job's deadline. */
interface AttemptLimits {
  signal: AbortSignal;
  timeout: AbortSignal;
  timeoutMs: number;
  deadline?: AbortSignal;
}

function attemptLimits(
  job: JobView,
  startedAt: number,
  signal: AbortSignal,
  timeoutMs: number,
): AttemptLimits {
  const timeout = AbortSignal.timeout(timeoutMs);
  const deadline =
    job.deadline !== undefined
      ? AbortSignal.timeout(Math.max(0, job.deadline - startedAt))
      : undefined;
  return {
    signal: AbortSignal.any(deadline ? [signal, timeout, deadline] : [signal, timeout]),
    timeout,
    timeoutMs,
    deadline,
  };
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
