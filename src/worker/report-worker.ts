/**
 * The BullMQ side of the worker: one BullMQ Worker per report type (each with
 * its own concurrency and rate limit), handing each attempt to the processor
 * and translating its outcome back into BullMQ terms: retry with our backoff
 * delay, fail without retry, rate-limit the type, or release the job to the
 * queue on shutdown. It also carries cancel requests to the attempts running
 * here: a pub/sub message for speed, and a poll of the job records as the
 * fallback for a message that was missed.
 */
import { SpanStatusCode, trace } from "@opentelemetry/api";
import { type Job, UnrecoverableError, WaitingError, Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { WorkerConfig } from "../config/config.js";
import { type ReportType, reportTypes } from "../domain/job.js";
import { recordField } from "../queue/job-record.js";
import { type Keys, queueNameFor } from "../queue/keys.js";
import { type ReportJobData, retryBackoffType } from "../queue/submitter.js";
import { attrAttempt, attrJobId, attrReportType, attrTenant } from "../telemetry/attributes.js";
import { createBullTelemetry } from "../telemetry/bullmq-telemetry.js";
import { reportMetrics } from "../telemetry/metrics.js";
import { backoffDelay, cancelReason, type Processor, releaseReason } from "./processor.js";

/** Per-report-type worker limits. */
export interface ReportTypeLimits {
  concurrency: number;
  /** At most `max` jobs of this type start per `durationMs` (across all workers). */
  rateLimit?: { max: number; durationMs: number };
}

/** Worker tuning: the worker slice of the configuration. */
export interface ReportWorkerSettings
  extends Pick<
    WorkerConfig,
    "retryBackoffMs" | "lockDurationMs" | "stalledIntervalMs" | "cancelPollMs"
  > {
  reportTypes: Record<ReportType, ReportTypeLimits>;
}

/** The running workers of one process. */
export interface ReportWorker {
  readonly workers: Record<ReportType, Worker<ReportJobData>>;
  /** Starts fetching jobs and listening for cancel requests. */
  start(): Promise<void>;
  /**
   * Stops fetching, lets running attempts finish for up to `graceMs`, then
   * aborts the rest and puts them back in the queue (not failed). Idempotent.
   */
  close(graceMs: number): Promise<void>;
}

class RetryableAttemptError extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
  }
}

/**
 * Creates the workers (not started). `connection` must have
 * maxRetriesPerRequest: null; `subscriber` is used for nothing else;
 * `commands` is a fail-fast connection for the cancel poll.
 */
export function createReportWorker(deps: {
  connection: Redis;
  subscriber: Redis;
  commands: Redis;
  keys: Keys;
  processor: Processor;
  settings: ReportWorkerSettings;
  logger: Logger;
}): ReportWorker {
  const { connection, subscriber, commands, keys, processor, settings, logger } = deps;
  const active = new Map<string, ReportType>();
  // BullMQ puts a rate-limited job that has a priority (all of ours do) back
  // without adding a queue marker, so fetchers blocked on the marker would
  // sleep out drainDelay (5 s) instead of the pause asked for. Wake them when
  // the pause ends.
  const wakeFetchersAfter = (type: ReportType, delayMs: number) => {
    const marker = workers[type].keys.marker;
    if (marker === undefined) return;
    const timer = setTimeout(() => {
      commands.zadd(marker, 0, "0").catch(() => undefined);
    }, delayMs + 10);
    timer.unref();
  };

  const makeProcess =
    (type: ReportType) => async (job: Job<ReportJobData>, token?: string, signal?: AbortSignal) => {
      const id = job.id as string;
      active.set(id, type);
      // BullMQ's consumer span for this attempt (bullmq-otel), continuing the enqueue's trace.
      const span = trace.getActiveSpan();
      span?.setAttributes({
        [attrJobId]: id,
        [attrReportType]: type,
        [attrTenant]: job.data.tenant,
        [attrAttempt]: job.attemptsMade + 1,
      });
      try {
        const outcome = await processor
          .run(
            { id, attemptsMade: job.attemptsMade, maxAttempts: job.opts.attempts ?? 1 },
            signal ?? new AbortController().signal,
          )
          .catch((err: unknown) => {
            // Not an outcome: the processor itself failed (Redis away, say).
            span?.recordException(err as Error);
            span?.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
            throw err;
          });
        reportMetrics().attemptEnded(type, outcome.kind);
        if (outcome.kind === "retry" || outcome.kind === "failed") {
          span?.recordException(outcome.error);
          span?.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error.message });
        }
        switch (outcome.kind) {
          case "succeeded":
          case "skipped":
            return;
          case "released":
            await job.moveToWait(token);
            wakeFetchersAfter(type, 0);
            throw new WaitingError();
          case "throttled":
            await workers[type].rateLimit(outcome.delayMs);
            wakeFetchersAfter(type, outcome.delayMs);
            throw Worker.RateLimitError();
          case "retry":
            throw new RetryableAttemptError(outcome.error.message, outcome.delayMs);
          case "cancelled":
            throw new UnrecoverableError(cancelReason);
          case "failed":
            // Recorded as FAILED already; make sure BullMQ does not retry either.
            throw new UnrecoverableError(outcome.error.message);
        }
      } finally {
        active.delete(id);
      }
    };

  const telemetry = createBullTelemetry();
  const createWorker = (type: ReportType) => {
    const limits = settings.reportTypes[type];
    const worker = new Worker<ReportJobData>(queueNameFor(type), makeProcess(type), {
      connection,
      prefix: keys.bullPrefix,
      concurrency: limits.concurrency,
      limiter: limits.rateLimit
        ? { max: limits.rateLimit.max, duration: limits.rateLimit.durationMs }
        : undefined,
      autorun: false,
      lockDuration: settings.lockDurationMs,
      stalledInterval: settings.stalledIntervalMs,
      maxStalledCount: 1,
      telemetry,
      settings: {
        backoffStrategy: (attemptsMade: number, backoffType?: string, err?: Error) => {
          if (err instanceof RetryableAttemptError) return err.delayMs;
          if (backoffType !== retryBackoffType) return settings.retryBackoffMs;
          return backoffDelay(settings.retryBackoffMs, attemptsMade, Math.random);
        },
      },
    });
    // Rate-limited: during an outage BullMQ reports every reconnect attempt.
    let lastErrorLog = 0;
    worker.on("error", (err) => {
      const now = Date.now();
      if (now - lastErrorLog < 5000) return;
      lastErrorLog = now;
      logger.warn({ err: err.message, type }, "worker error");
    });
    // Jobs BullMQ fails on its own (stalled too often) never reach the
    // processor's catch; record them here. The append is state-guarded, so
    // failures the processor already recorded are left alone.
    worker.on("failed", (job, err) => {
      if (job === undefined || !job.finishedOn || job.id === undefined) return;
      const reason = /stalled/i.test(err.message)
        ? "the worker running the job stopped responding too many times"
        : err.message;
      processor
        .markFailed(job.id, Math.max(1, job.attemptsMade), reason)
        .catch((e: unknown) => logger.warn({ err: e, jobId: job.id }, "could not record failure"));
    });
    return worker;
  };
  const workers = Object.fromEntries(reportTypes.map((t) => [t, createWorker(t)])) as Record<
    ReportType,
    Worker<ReportJobData>
  >;

  const cancelLocally = (jobId: string) => {
    const type = active.get(jobId);
    if (type !== undefined && workers[type].cancelJob(jobId, cancelReason)) {
      logger.info({ jobId }, "cancel delivered to running job");
    }
  };
  const onControl = (channel: string, message: string) => {
    if (channel === keys.controlChannel) cancelLocally(message);
  };
  let polling = false;
  const poll = async () => {
    if (polling || active.size === 0) return;
    polling = true;
    try {
      const ids = [...active.keys()];
      const pipeline = commands.pipeline();
      for (const id of ids) pipeline.hget(keys.job(id), recordField.cancelRequested);
      const replies = (await pipeline.exec()) ?? [];
      replies.forEach(([err, value], i) => {
        if (!err && value) cancelLocally(ids[i] as string);
      });
    } catch {
      // Redis unreachable: the next poll tries again.
    } finally {
      polling = false;
    }
  };
  let pollTimer: NodeJS.Timeout | undefined;

  let closing: Promise<void> | undefined;
  return {
    workers,
    async start() {
      subscriber.on("message", onControl);
      await subscriber.subscribe(keys.controlChannel);
      pollTimer = setInterval(() => void poll(), settings.cancelPollMs);
      pollTimer.unref();
      for (const t of reportTypes) {
        workers[t]
          .run()
          .catch((err: unknown) => logger.error({ err, type: t }, "worker stopped unexpectedly"));
      }
    },
    close(graceMs) {
      closing ??= (async () => {
        clearInterval(pollTimer);
        const closed = Promise.all(reportTypes.map((t) => workers[t].close())).then(
          () => undefined,
        );
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          closed.then(() => false),
          new Promise<boolean>((r) => {
            timer = setTimeout(() => r(true), graceMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          logger.info(
            { graceMs, running: active.size },
            "grace period over; releasing running jobs back to the queue",
          );
          for (const t of reportTypes) workers[t].cancelAllJobs(releaseReason);
          await closed;
        }
        subscriber.off("message", onControl);
        await subscriber.unsubscribe(keys.controlChannel).catch(() => undefined);
      })();
      return closing;
    },
  };
}
