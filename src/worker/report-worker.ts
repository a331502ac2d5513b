/**
 * The BullMQ side of the worker: fetches jobs, hands each attempt to the
 * processor and translates its outcome back into BullMQ terms (retry with
 * our own backoff delay, fail without retry, or release to the queue on
 * shutdown). The processor and generators never see BullMQ.
 */
import { type Job, UnrecoverableError, WaitingError, Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { queueName } from "../queue/keys.js";
import { type ReportJobData, retryBackoffType } from "../queue/submitter.js";
import { backoffDelay, type Processor, releaseReason } from "./processor.js";

/** Worker tuning. */
export interface ReportWorkerSettings {
  bullPrefix: string;
  concurrency: number;
  retryBackoffMs: number;
  /** How long a job's lock lasts without renewal; a dead worker's jobs are recovered after about this long. */
  lockDurationMs: number;
  /** How often the stalled-job check runs. */
  stalledIntervalMs: number;
}

/** A running BullMQ worker. */
export interface ReportWorker {
  readonly worker: Worker<ReportJobData>;
  /** Starts fetching jobs. */
  start(): void;
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

/** Creates the worker (not started). `connection` must have maxRetriesPerRequest: null. */
export function createReportWorker(deps: {
  connection: Redis;
  processor: Processor;
  settings: ReportWorkerSettings;
  logger: Logger;
}): ReportWorker {
  const { connection, processor, settings, logger } = deps;
  const process = async (job: Job<ReportJobData>, token?: string, signal?: AbortSignal) => {
    const id = job.id as string;
    const outcome = await processor.run(
      { id, attemptsMade: job.attemptsMade, maxAttempts: job.opts.attempts ?? 1 },
      signal ?? new AbortController().signal,
    );
    switch (outcome.kind) {
      case "succeeded":
      case "skipped":
        return;
      case "released":
        await job.moveToWait(token);
        throw new WaitingError();
      case "retry":
        throw new RetryableAttemptError(outcome.error.message, outcome.delayMs);
      case "failed":
        // Recorded as FAILED already; make sure BullMQ does not retry either.
        throw new UnrecoverableError(outcome.error.message);
    }
  };

  const worker = new Worker<ReportJobData>(queueName, process, {
    connection,
    prefix: settings.bullPrefix,
    concurrency: settings.concurrency,
    autorun: false,
    lockDuration: settings.lockDurationMs,
    stalledInterval: settings.stalledIntervalMs,
    maxStalledCount: 1,
    settings: {
      backoffStrategy: (attemptsMade: number, type?: string, err?: Error) => {
        if (err instanceof RetryableAttemptError) return err.delayMs;
        if (type !== retryBackoffType) return settings.retryBackoffMs;
        return backoffDelay(settings.retryBackoffMs, attemptsMade, Math.random);
      },
    },
  });
  worker.on("error", (err) => logger.warn({ err: err.message }, "worker error"));
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

  let closing: Promise<void> | undefined;
  return {
    worker,
    start() {
      worker.run().catch((err: unknown) => logger.error({ err }, "worker stopped unexpectedly"));
    },
    close(graceMs) {
      closing ??= (async () => {
        const closed = worker.close();
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          closed.then(() => false),
          new Promise<boolean>((r) => {
            timer = setTimeout(() => r(true), graceMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          logger.info({ graceMs }, "grace period over; releasing running jobs back to the queue");
          worker.cancelAllJobs(releaseReason);
          await closed;
        }
      })();
      return closing;
    },
  };
}
