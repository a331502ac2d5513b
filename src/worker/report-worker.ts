/**
 * The BullMQ side of the worker: one BullMQ Worker per report type (each with
 * its own concurrency and rate limit), handing each attempt to the processor
 * and translating its outcome back into BullMQ terms: retry with our backoff
 * delay, fail without retry, rate-limit the type, or release the job to the
 * queue on shutdown. It also carries cancel requests to the attempts running
 * here: a pub/sub message for speed, and a poll of the job records as the
 * fallback for a message that was missed.
 *
 * Locks. BullMQ holds a lock on each job a worker runs (`lockDurationMs`,
 * renewed every `lockRenewMs`); a job whose lock expired is taken over by
 * another worker at its next stalled check (every `stalledIntervalMs`). An
 * attempt that lost its lock is aborted here as soon as that is known: BullMQ
 * failed to renew it (`lockRenewalFailed`: the lock is gone or another
 * fetch's), or no renewal succeeded for a whole lock duration (Redis
 * unreachable, the process frozen), after which the lock has expired for
 * sure. Its writes would be refused anyway (they are fenced by the lock
 * token); aborting stops the generator's work for nobody.
 */
import { context, SpanStatusCode, trace } from "@opentelemetry/api";
import { DelayedError, type Job, UnrecoverableError, WaitingError, Worker } from "bullmq";
import type { Logger } from "pino";
import type { WorkerConfig } from "../config/config.js";
import { type ReportType, reportTypes } from "../domain/job.js";
import type { RedisClient } from "../queue/connections.js";
import { recordField } from "../queue/job-record.js";
import { type Keys, queueNameFor } from "../queue/keys.js";
import { perJobPipeline } from "../queue/per-job-pipeline.js";
import { isStorageUnavailable, retryWhileUnavailable } from "../queue/storage-errors.js";
import { type ReportJobData, retryBackoffType } from "../queue/submitter.js";
import { attrAttempt, attrJobId, attrReportType, attrTenant } from "../telemetry/attributes.js";
import { consumerContext, workerBullTelemetry } from "../telemetry/bullmq-telemetry.js";
import { forgetJobTrace, inJobTrace, keepJobTrace } from "../telemetry/job-traces.js";
import { reportMetrics } from "../telemetry/metrics.js";
import {
  type AttemptContext,
  backoffDelay,
  cancelReason,
  lockLostReason,
  type Processor,
  releaseReason,
} from "./processor.js";

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
    "retryBackoffMs" | "lockDurationMs" | "lockRenewMs" | "stalledIntervalMs" | "cancelPollMs"
  > {
  reportTypes: Record<ReportType, ReportTypeLimits>;
}

/** An attempt running in this process. */
interface RunningAttempt {
  type: ReportType;
  /** BullMQ's lock token of the fetch. */
  token: string;
  /**
   * The attempt's one controller: aborted here (cancel requests, a lost
   * lock, shutdown) and by the processor (a refused or failed write, the run
   * timeout, the deadline); its signal is the generator's.
   */
  abort: AbortController;
  /** When the job's lock was last known to be held (ms): the fetch, then each renewal. */
  lockHeldAt: number;
}

/** The running workers of one process. */
export interface ReportWorker {
  /** The first consumed shard's workers, by report type. */
  readonly workers: Record<ReportType, Worker<ReportJobData>>;
  /** Every BullMQ worker of this process: one per report type and consumed shard. */
  readonly all: readonly Worker<ReportJobData>[];
  /** Starts fetching jobs and listening for cancel requests. */
  start(): Promise<void>;
  /**
   * Stops fetching, lets running attempts finish for up to `graceMs`, then
   * aborts the rest and puts them back in the queue (not failed). Idempotent.
   */
  close(graceMs: number): Promise<void>;
}

/**
 * How long a failure BullMQ recorded on its own is retried into the job's
 * record while Redis cannot serve it; after that the reconciler's sweep
 * records it.
 */
const failureRecordDeadlineMs = 60_000;

/** The failure reason of an attempt whose own recording failed because Redis was away. */
export const attemptStorageReason = "storage unavailable while recording the attempt";

/**
 * The error BullMQ gets for an attempt the processor could not finish
 * recording: its message is safe to show callers (it may become the job's
 * failure reason); the cause is logged here.
 */
function safeAttemptError(err: unknown, jobId: string, logger: Logger): Error {
  // Logged after an await of the attempt: in its trace (job-traces.ts).
  if (isStorageUnavailable(err)) {
    inJobTrace(jobId, () =>
      logger.warn(
        { err: (err as Error).message, jobId },
        "attempt could not be recorded: storage unavailable",
      ),
    );
    return new Error(attemptStorageReason);
  }
  const e =
    err instanceof Error
      ? { type: err.name, message: err.message, stack: err.stack }
      : { message: String(err) };
  inJobTrace(jobId, () => logger.error({ err: e, jobId }, "attempt failed unexpectedly"));
  return new Error("internal error in the worker");
}

/**
 * An attempt's end the processor has recorded already (FAILED, CANCELLED):
 * BullMQ must not retry it, and its "failed" event must not record it again.
 */
class RecordedEnd extends UnrecoverableError {}

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
  connection: RedisClient;
  subscriber: RedisClient;
  commands: RedisClient;
  keys: Keys;
  /**
   * The queue shards to consume (WORKER_SHARDS), `keys` alone by default.
   * Each gets one BullMQ worker per report type, with its own blocking
   * connection, so a process holds types x shards blocking connections.
   */
  shards?: readonly Keys[];
  /** How many shards the deployment has (QUEUE_SHARDS): splits each type's rate limit. */
  shardCount?: number;
  processor: Processor;
  settings: ReportWorkerSettings;
  logger: Logger;
}): ReportWorker {
  const { connection, subscriber, commands, keys, processor, settings, logger } = deps;
  const shards = deps.shards ?? [keys];
  const shardCount = deps.shardCount ?? shards.length;
  const controlChannels = new Set(shards.map((s) => s.controlChannel));
  // The attempts running here, by job id: at most one per job (see makeProcess).
  const active = new Map<string, RunningAttempt>();
  const lockRenewMs = renewInterval(settings);
  // BullMQ puts a rate-limited job that has a priority (all of ours do) back
  // without adding a queue marker, so fetchers blocked on the marker would
  // sleep out drainDelay (5 s) instead of the pause asked for. Wake them when
  // the pause ends.
  const wakeFetchersAfter = (worker: Worker<ReportJobData>, delayMs: number) => {
    const marker = worker.keys.marker;
    if (marker === undefined) return;
    const timer = setTimeout(() => {
      commands.zadd(marker, 0, "0").catch(() => undefined);
    }, delayMs + 10);
    timer.unref();
  };

  // Two parameters, no signal: BullMQ makes an AbortController per job only
  // for a processor that takes one (its cancelJob and cancelAllJobs); the
  // attempt's own controller (`active`) serves for both, shutdown included.
  const makeProcess =
    (type: ReportType, self: () => Worker<ReportJobData>) =>
    async (job: Job<ReportJobData>, token?: string) => {
      const id = job.id as string;
      // BullMQ hands every fetch its lock token; without one, writes could not be fenced.
      if (token === undefined) throw new Error(`job ${id} was fetched without a lock token`);
      const previous = active.get(id);
      if (previous !== undefined) {
        // This process fetched a job it still runs: the earlier attempt lost
        // its lock (the process froze) and the job came back. BullMQ tracks
        // locks by job id, so the two cannot run side by side here (the first
        // to end would stop the other's lock renewals): stop the stale one
        // and hand the job back for a moment (any worker may take it then;
        // here, once the stale attempt has ended). No attempt is used.
        lockLost(id, previous, "fetched again");
        logger.info({ jobId: id, type }, "job fetched again while its stale attempt runs here");
        await job.moveToDelayed(Date.now() + lockRenewMs, token);
        throw new DelayedError();
      }
      const attempt: RunningAttempt = {
        type,
        token,
        abort: new AbortController(),
        lockHeldAt: Date.now(),
      };
      active.set(id, attempt);
      // BullMQ's consumer span of this attempt, continuing the enqueue's trace:
      // bullmq-otel's (active here), or made here when the Worker runs without
      // BullMQ's telemetry (nothing recorded in this process).
      const made =
        telemetry === undefined
          ? consumerContext(queueNameFor(type), job.opts.telemetry?.metadata)
          : undefined;
      const attemptContext = made ?? context.active();
      // For its log lines after awaits when contexts do not follow them (job-traces.ts).
      keepJobTrace(id, attemptContext);
      const span = trace.getSpan(attemptContext);
      // Unrecorded (the usual case without an exporter): no attribute object per job.
      if (span?.isRecording() === true)
        span.setAttributes({
          [attrJobId]: id,
          [attrReportType]: type,
          [attrTenant]: job.data.tenant,
          [attrAttempt]: job.attemptsMade + 1,
        });
      try {
        const attemptOf: AttemptContext = {
          id,
          attemptsMade: job.attemptsMade,
          maxAttempts: job.opts.attempts ?? 1,
          lockToken: token,
          queued: {
            tenant: job.data.tenant,
            reportType: type,
            deadline: job.data.deadline,
            userId: job.data.userId,
            filters: job.data.filters,
            idempotencyKeyDigest: job.data.idempotencyKeyDigest,
            queuedAt: job.data.queuedAt,
          },
        };
        const running =
          made === undefined
            ? processor.run(attemptOf, attempt.abort)
            : context.with(made, () => processor.run(attemptOf, attempt.abort));
        const outcome = await running.catch((err: unknown) => {
          // Not an outcome: the processor itself failed (Redis away, say).
          span?.recordException(err as Error);
          span?.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
          // BullMQ keeps the message as the job's failedReason, which becomes the
          // job's failure reason that callers read: a sentence, never a driver's text.
          throw safeAttemptError(err, id, logger);
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
          case "lost":
            // Not ours any more: completing or failing it would be refused
            // (and noisy). Whoever holds the job now finishes it; a lock that
            // merely expired is recovered by the next stalled check.
            span?.addEvent("attempt lost its lock");
            throw new WaitingError();
          case "released":
            await job.moveToWait(token);
            wakeFetchersAfter(self(), 0);
            throw new WaitingError();
          case "throttled":
            await self().rateLimit(outcome.delayMs);
            wakeFetchersAfter(self(), outcome.delayMs);
            throw Worker.RateLimitError();
          case "retry":
            throw new RetryableAttemptError(outcome.error.message, outcome.delayMs);
          case "cancelled":
            throw new RecordedEnd(cancelReason);
          case "failed":
            // Recorded as FAILED already; make sure BullMQ does not retry either.
            throw new RecordedEnd(outcome.error.message);
        }
      } finally {
        if (made !== undefined) span?.end();
        if (active.get(id) === attempt) {
          active.delete(id);
          forgetJobTrace(id);
        }
      }
    };

  /** Aborts `attempt` (of job `id`), which lost its lock. */
  const lockLost = (id: string, attempt: RunningAttempt, why: string) => {
    if (attempt.abort.signal.aborted) return;
    attempt.abort.abort(lockLostReason);
    logger.warn(
      { jobId: id, type: attempt.type, why },
      "lost the lock of a running job; aborting its attempt",
    );
  };
  /** Aborts the attempts whose lock was not renewed for a whole lock duration: it has expired. */
  const checkLocks = () => {
    const expiredBefore = Date.now() - settings.lockDurationMs;
    for (const [id, attempt] of active) {
      if (attempt.lockHeldAt < expiredBefore) lockLost(id, attempt, "not renewed in time");
    }
  };
  /**
   * BullMQ could not renew these jobs' locks. Its event names jobs, not
   * fetches: the lock is read to tell this attempt's loss from a late report
   * about an earlier attempt of the same job.
   */
  const renewalFailed = async (type: ReportType, ids: string[]) => {
    for (const id of ids) {
      const attempt = active.get(id);
      if (attempt === undefined) continue;
      const holder = await commands.get(keys.bullJobLock(type, id)).catch(() => attempt.token);
      if (holder !== attempt.token && active.get(id) === attempt) {
        lockLost(id, attempt, "renewal refused");
      }
    }
  };

  // None when nothing is recorded here: see workerBullTelemetry.
  const telemetry = workerBullTelemetry();
  const createWorker = (type: ReportType, shard: Keys) => {
    const limits = settings.reportTypes[type];
    let worker: Worker<ReportJobData> | undefined;
    // Per shard: BullMQ's concurrency is per worker and its limiter per queue,
    // so the type's concurrency is split over this process's shards and its
    // rate over all shards (each at least 1): exact for one shard, within
    // rounding (and shard imbalance) for more; README "Scaling out".
    worker = new Worker<ReportJobData>(
      queueNameFor(type),
      makeProcess(type, () => worker as Worker<ReportJobData>),
      {
        connection,
        prefix: shard.bullPrefix,
        concurrency: Math.max(1, Math.round(limits.concurrency / shards.length)),
        limiter: limits.rateLimit
          ? {
              max: Math.max(1, Math.round(limits.rateLimit.max / shardCount)),
              duration: limits.rateLimit.durationMs,
            }
          : undefined,
        autorun: false,
        lockDuration: settings.lockDurationMs,
        lockRenewTime: lockRenewMs,
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
      },
    );
    // Rate-limited: during an outage BullMQ reports every reconnect attempt.
    let lastErrorLog = 0;
    worker.on("error", (err) => {
      const now = Date.now();
      if (now - lastErrorLog < 5000) return;
      lastErrorLog = now;
      logger.warn({ err: err.message, type }, "worker error");
    });
    worker.on("lockRenewalFailed", (ids) => void renewalFailed(type, ids));
    worker.on("locksRenewed", ({ jobIds }) => {
      const now = Date.now();
      for (const id of jobIds) {
        const attempt = active.get(id);
        if (attempt !== undefined) attempt.lockHeldAt = now;
      }
    });
    // Jobs BullMQ fails on its own (stalled too often) never reach the
    // processor's catch; record them here. Failures the processor recorded
    // (RecordedEnd) are left alone: by the time this event comes, RetryJob may
    // have queued the job again, and recording the old failure then failed
    // the new run before it started (seen in CI). For the same reason a run
    // that began before the job's last RetryJob is not recorded (markFailed).
    worker.on("failed", (job, err) => {
      if (job === undefined || !job.finishedOn || job.id === undefined) return;
      if (err instanceof RecordedEnd) return;
      const reason = /stalled/i.test(err.message)
        ? "the worker running the job stopped responding too many times"
        : err.message;
      const jobId = job.id;
      // BullMQ's connection and the command connection reconnect each at
      // its own pace after Redis comes back: the failure BullMQ has just
      // recorded on the one may come while the other is still down (seen
      // in CI: the record stayed RUNNING until the reconciler's sweep).
      // markFailed reads the record again each time: safe to repeat.
      retryWhileUnavailable(
        () => processor.markFailed(jobId, Math.max(1, job.attemptsMade), reason, job.processedOn),
        { deadlineMs: failureRecordDeadlineMs, stopped: () => closing !== undefined },
      ).catch((e: unknown) => logger.warn({ err: e, jobId }, "could not record failure"));
    });
    return worker;
  };
  const perShard = shards.map(
    (shard) =>
      Object.fromEntries(reportTypes.map((t) => [t, createWorker(t, shard)])) as Record<
        ReportType,
        Worker<ReportJobData>
      >,
  );
  const workers = perShard[0] as Record<ReportType, Worker<ReportJobData>>;
  const all = perShard.flatMap((w) => reportTypes.map((t) => w[t]));

  const cancelLocally = (jobId: string) => {
    const attempt = active.get(jobId);
    if (attempt === undefined || attempt.abort.signal.aborted) return;
    attempt.abort.abort(cancelReason);
    logger.info({ jobId }, "cancel delivered to running job");
  };
  const onControl = (channel: string, message: string) => {
    if (controlChannels.has(channel)) cancelLocally(message);
  };
  let polling = false;
  const poll = async () => {
    if (polling || active.size === 0) return;
    polling = true;
    try {
      const ids = [...active.keys()];
      const replies = await perJobPipeline(commands, keys, ids, (p, id) =>
        p.hget(keys.job(id), recordField.cancelRequested),
      );
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
  let lockTimer: NodeJS.Timeout | undefined;

  let closing: Promise<void> | undefined;
  return {
    workers,
    all,
    async start() {
      subscriber.on("smessage", onControl);
      // One call per channel: on a cluster, channels of one call must share a slot.
      await Promise.all([...controlChannels].map((c) => subscriber.ssubscribe(c)));
      pollTimer = setInterval(() => void poll(), settings.cancelPollMs);
      pollTimer.unref();
      lockTimer = setInterval(checkLocks, lockRenewMs);
      lockTimer.unref();
      for (const w of all) {
        w.run().catch((err: unknown) =>
          logger.error(
            { err, queue: w.name, prefix: w.opts.prefix },
            "worker stopped unexpectedly",
          ),
        );
      }
    },
    close(graceMs) {
      closing ??= (async () => {
        clearInterval(pollTimer);
        clearInterval(lockTimer);
        const closed = Promise.all(all.map((w) => w.close())).then(() => undefined);
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
          for (const attempt of active.values()) {
            if (!attempt.abort.signal.aborted) attempt.abort.abort(releaseReason);
          }
          await closed;
        }
        subscriber.off("smessage", onControl);
        await Promise.all(
          [...controlChannels].map((c) => subscriber.sunsubscribe(c).catch(() => undefined)),
        );
      })();
      return closing;
    },
  };
}

/**
 * How often BullMQ renews a running job's lock: WORKER_LOCK_RENEW_MS, else an
 * eighth of the lock duration. Renewals come every half to one interval, so a
 * live worker's lock always has at least `lockDurationMs - lockRenewMs` left:
 * the longest freeze (GC pause, stopped process) it survives without losing
 * its jobs.
 */
export function renewInterval(settings: Pick<WorkerConfig, "lockDurationMs" | "lockRenewMs">) {
  return settings.lockRenewMs ?? Math.max(50, Math.floor(settings.lockDurationMs / 8));
}
