/**
 * CancelJob and RetryJob. Both change the job record and its event log first
 * (one transition each, guarded by the state they expect), then bring BullMQ along:
 * a worker that races with either change sees the new state in the record
 * and does nothing.
 */
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { FailedPreconditionError, JobNotFoundError } from "../domain/errors.js";
import type { JobView, ReportType } from "../domain/job.js";
import { attrJobId, attrReportType, attrTenant, bullmqAttr } from "../telemetry/attributes.js";
import { traceEnqueue } from "../telemetry/bullmq-telemetry.js";
import { linkTo } from "../telemetry/trace-context.js";
import type { JobReader } from "./job-reader.js";
import { type Keys, queueNameFor } from "./keys.js";
import { loadLuaScript } from "./scripts/load.js";
import type { BullJobSpec } from "./submitter.js";
import type { TransitionApplier } from "./transition-applier.js";

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
  transitions: TransitionApplier;
  bullJob: (job: JobView) => BullJobSpec;
}): JobControl {
  const { redis, queues, keys, jobs, transitions } = deps;

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
            const done = await transitions.apply(job, "cancelledWaiting", {
              attempt: job.attemptsMade,
              progress: job.progress,
              phase: job.phase,
              at: now,
              reason,
            });
            if (!done.applied) continue;
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
    const requeued = await transitions.apply(job, "requeued", { at: now, traceparent });
    if (!requeued.applied) {
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
      await transitions.apply(job, "retryUnscheduled", { at: Date.now() });
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
