/**
 * CancelJob and RetryJob. Both change the job record and its event log first
 * (atomically, guarded by the state they expect), then bring BullMQ along:
 * a worker that races with either change sees the new state in the record
 * and does nothing.
 */
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { FailedPreconditionError, JobNotFoundError } from "../domain/errors.js";
import type { JobView, ReportType } from "../domain/job.js";
import type { EventLog } from "../events/event-log.js";
import { attrJobId, attrReportType, attrTenant, bullmqAttr } from "../telemetry/attributes.js";
import { traceEnqueue } from "../telemetry/bullmq-telemetry.js";
import { reportMetrics } from "../telemetry/metrics.js";
import { linkTo } from "../telemetry/trace-context.js";
import type { JobReader } from "./job-reader.js";
import { recordField as f } from "./job-record.js";
import { type Keys, queueNameFor } from "./keys.js";
import { loadLuaScript } from "./scripts/load.js";
import type { BullJobSpec } from "./submitter.js";

/** Cancels and re-runs jobs. */
export interface JobControl {
  /**
   * Cancels a QUEUED, RETRYING or RUNNING job of `tenant`. A running job is
   * asked to stop (its worker aborts the generator); the returned job is
   * CANCELLED once that happened within `waitMs`, else still RUNNING.
   * @throws JobNotFoundError, FailedPreconditionError (SUCCEEDED or FAILED)
   */
  cancel(tenant: string, jobId: string, reason: string, waitMs?: number): Promise<JobView>;
  /**
   * Re-queues a FAILED job with a fresh set of attempts, same id, same log.
   * @throws JobNotFoundError, FailedPreconditionError (not FAILED)
   */
  retry(tenant: string, jobId: string): Promise<JobView>;
}

const requestCancelScript = loadLuaScript("request-cancel");

/** Creates job control over a command connection and the report queues. */
export function createJobControl(deps: {
  redis: Redis;
  queues: Record<ReportType, Queue>;
  keys: Keys;
  jobs: JobReader;
  log: EventLog;
  bullJob: (job: JobView) => BullJobSpec;
  settings: { retentionFailedMs: number };
}): JobControl {
  const { redis, queues, keys, jobs, log, settings } = deps;

  const load = async (tenant: string, jobId: string) => {
    const job = await jobs.get(jobId);
    if (job === undefined || job.tenant !== tenant) throw new JobNotFoundError(jobId);
    return job;
  };

  return {
    async cancel(tenant, jobId, reason, waitMs = 1500) {
      // The state can move under us (a worker picks the job up); a few rounds settle it.
      for (let round = 0; round < 5; round++) {
        const job = await load(tenant, jobId);
        switch (job.state) {
          case "cancelled":
            return job;
          case "succeeded":
          case "failed":
            throw new FailedPreconditionError(
              `job ${jobId} already ended ${job.state.toUpperCase()}; only queued, retrying or running jobs can be cancelled`,
            );
          case "queued":
          case "retrying": {
            const now = Date.now();
            const done = await log.append(
              jobId,
              {
                type: "cancelled",
                state: "cancelled",
                progress: job.progress,
                phase: job.phase,
                attempt: job.attemptsMade,
                time: now,
                error: reason,
              },
              {
                // biome-ignore format: field/value pairs
                recordUpdates: [f.state, "cancelled", f.failureReason, reason, f.finishedAt, String(now), f.cancelRequested, reason],
                allowedStates: ["queued", "retrying"],
                ttlMs: settings.retentionFailedMs,
              },
            );
            if (!done.appended) continue;
            const queuedAt = job.requeuedAt ?? job.createdAt;
            reportMetrics().jobFinished(job.reportType, "cancelled", (now - queuedAt) / 1000);
            // Not run, ever: out of the queue. A worker that fetched it meanwhile skips it (state).
            await queues[job.reportType].remove(jobId).catch(() => 0);
            return { ...job, state: "cancelled", failureReason: reason, finishedAt: now };
          }
          case "running": {
            const flagged = await requestCancelScript.run(
              redis,
              [keys.job(jobId)],
              [reason, keys.controlChannel, jobId],
            );
            if (flagged !== 1) continue;
            const deadline = Date.now() + waitMs;
            for (;;) {
              const now = await load(tenant, jobId);
              if (now.state !== "running" || Date.now() >= deadline) return now;
              await new Promise((r) => setTimeout(r, 25));
            }
          }
        }
      }
      return load(tenant, jobId);
    },

    async retry(tenant, jobId) {
      const job = await load(tenant, jobId);
      if (job.state !== "failed") {
        throw new FailedPreconditionError(
          `job ${jobId} is ${job.state.toUpperCase()}; only FAILED jobs can be retried`,
        );
      }
      // The re-run is a new trace (this RetryJob call's), linked to the earlier run's.
      return traceEnqueue(
        queueNameFor(job.reportType),
        job.reportType,
        linkTo(job.traceparent),
        (t) => {
          t.span.setAttributes({
            [bullmqAttr.jobId]: jobId,
            [attrJobId]: jobId,
            [attrReportType]: job.reportType,
            [attrTenant]: tenant,
          });
          return requeue(job, t.traceparent, t.metadata);
        },
      );
    },
  };

  async function requeue(job: JobView, traceparent: string, metadata: string): Promise<JobView> {
    const jobId = job.id;
    const now = Date.now();
    const requeued = await log.append(
      jobId,
      { type: "queued", state: "queued", progress: 0, phase: "retry", attempt: 0, time: now },
      {
        // biome-ignore format: field/value pairs
        recordUpdates: [
            f.state, "queued", f.progress, "0", f.phase, "retry", f.attemptsMade, "0", f.failureReason, "",
            f.finishedAt, "", f.startedAt, "", f.resultPath, "", f.cancelRequested, "",
            f.traceparent, traceparent, f.requeuedAt, String(now),
          ],
        allowedStates: ["failed"],
        ttlMs: -1,
      },
    );
    if (!requeued.appended) {
      throw new FailedPreconditionError(
        `job ${jobId} changed state meanwhile; read it and try again`,
      );
    }
    const queue = queues[job.reportType];
    try {
      // Queued afresh under the same id (not Job.retry, which would keep the
      // first run's trace context in the job's options).
      const existing = await queue.getJob(jobId);
      if (existing !== undefined) await existing.remove().catch(() => undefined);
      const spec = deps.bullJob({ ...job, runAt: undefined });
      await queue.add(spec.name, spec.data, { ...spec.opts, jobId, telemetry: { metadata } });
    } catch (err) {
      await log.append(
        jobId,
        {
          type: "failed",
          state: "failed",
          progress: 0,
          phase: "retry",
          attempt: 0,
          time: Date.now(),
          error: "retry could not be scheduled",
        },
        {
          recordUpdates: [
            f.state,
            "failed",
            f.failureReason,
            "retry could not be scheduled",
            f.finishedAt,
            String(Date.now()),
          ],
          allowedStates: ["queued"],
          ttlMs: settings.retentionFailedMs,
        },
      );
      throw err;
    }
    return {
      ...job,
      state: "queued",
      progress: 0,
      phase: "retry",
      attemptsMade: 0,
      failureReason: "",
      finishedAt: undefined,
      startedAt: undefined,
      result: undefined,
      traceparent,
      requeuedAt: now,
    };
  }
}
