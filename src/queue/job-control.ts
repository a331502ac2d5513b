/**
 * CancelJob and RetryJob. Each is one atomic step that changes the job's
 * record and event log (a transition, guarded by the state it expects) and
 * BullMQ's job together (queue-transitions.ts): CancelJob of a waiting job
 * takes it out of BullMQ, RetryJob replaces BullMQ's finished job with a
 * new one. A worker that races with either change sees the new state in the
 * record and does nothing; RetryJob waits (briefly) for a worker still
 * finishing the job's last attempt to let BullMQ's job go, rather than
 * queueing a run that BullMQ would never start.
 */

import { FailedPreconditionError, JobNotFoundError } from "../domain/errors.js";
import type { JobView } from "../domain/job.js";
import { attrJobId, attrReportType, attrTenant, bullmqAttr } from "../telemetry/attributes.js";
import { traceEnqueue } from "../telemetry/bullmq-telemetry.js";
import { linkTo } from "../telemetry/trace-context.js";
import { pause, throwIfAborted } from "./caller-signal.js";
import type { RedisClient } from "./connections.js";
import type { JobReader } from "./job-reader.js";
import { type Keys, queueNameFor } from "./keys.js";
import type { QueueTransitions } from "./queue-transitions.js";
import { loadLuaScript } from "./scripts/load.js";
import type { BullJobSpec } from "./submitter.js";

/** Cancels and re-runs jobs. */
export interface JobControl {
  /**
   * Cancels a QUEUED, RETRYING or RUNNING job of `tenant`. A running job is
   * asked to stop (its worker aborts the generator); the returned job is
   * CANCELLED once that happened within `waitMs`, else still RUNNING.
   * `signal`: the caller's (caller-signal.ts); once it has aborted nothing
   * more is sent, and the wait ends at once with its reason.
   * @throws JobNotFoundError, FailedPreconditionError (SUCCEEDED or FAILED)
   */
  cancel(
    tenant: string,
    jobId: string,
    reason: string,
    signal?: AbortSignal,
    waitMs?: number,
  ): Promise<JobView>;
  /**
   * Re-queues a FAILED job with a fresh set of attempts, same id, same log.
   * `signal`: as for `cancel`; it also ends the wait for a worker to let go.
   * @throws JobNotFoundError, FailedPreconditionError (not FAILED)
   */
  retry(tenant: string, jobId: string, signal?: AbortSignal): Promise<JobView>;
}

const requestCancelScript = loadLuaScript("request-cancel");

/** How long RetryJob waits for a worker still finishing the job's last attempt. */
const retryBusyWaitMs = 2000;

/** Creates job control over a command connection and the report queues. */
export function createJobControl(deps: {
  redis: RedisClient;
  keys: Keys;
  jobs: JobReader;
  queueTransitions: QueueTransitions;
  bullJob: (job: JobView) => BullJobSpec;
}): JobControl {
  const { redis, keys, jobs, queueTransitions } = deps;

  const load = async (tenant: string, jobId: string, signal: AbortSignal | undefined) => {
    const job = await jobs.get(jobId, signal);
    if (job === undefined || job.tenant !== tenant) throw new JobNotFoundError(jobId);
    return job;
  };

  return {
    async cancel(tenant, jobId, reason, signal, waitMs = 1500) {
      // The state can move under us (a worker picks the job up); a few rounds settle it.
      for (let round = 0; round < 5; round++) {
        const job = await load(tenant, jobId, signal);
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
            // Not run, ever: out of BullMQ in the same step. A worker that
            // fetched it meanwhile holds it; it finds the job CANCELLED and skips it.
            throwIfAborted(signal);
            const done = await queueTransitions.change({
              job,
              name: "cancelledWaiting",
              input: {
                attempt: job.attemptsMade,
                progress: job.progress,
                phase: job.phase,
                at: now,
                reason,
              },
              remove: "unlocked",
            });
            if (done.kind !== "applied") continue;
            return { ...job, state: "cancelled", failureReason: reason, finishedAt: now };
          }
          case "running": {
            throwIfAborted(signal);
            const flagged = await requestCancelScript.run(
              redis,
              [keys.job(jobId)],
              [reason, keys.of(jobId).controlChannel, jobId],
            );
            if (flagged !== 1) continue;
            const deadline = Date.now() + waitMs;
            for (;;) {
              const now = await load(tenant, jobId, signal);
              if (now.state !== "running" || Date.now() >= deadline) return now;
              await pause(25, signal);
            }
          }
        }
      }
      return load(tenant, jobId, signal);
    },

    async retry(tenant, jobId, signal) {
      const job = await load(tenant, jobId, signal);
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
          return requeue(job, t.traceparent, t.metadata, signal);
        },
      );
    },
  };

  /**
   * FAILED → QUEUED and BullMQ's job replaced by a new one (same id, fresh
   * attempts), in one step. While a worker still holds BullMQ's job (it
   * recorded FAILED and has yet to tell BullMQ), nothing changes; this waits
   * a little for it, then refuses.
   */
  async function requeue(
    job: JobView,
    traceparent: string,
    metadata: string,
    signal: AbortSignal | undefined,
  ): Promise<JobView> {
    const jobId = job.id;
    // Queued afresh under the same id (not Job.retry, which would keep the
    // first run's trace context in the job's options); runAt is behind it.
    const deadline = Date.now() + retryBusyWaitMs;
    for (;;) {
      throwIfAborted(signal);
      const now = Date.now();
      // Its data says when this run was queued: now, as the record will.
      const spec = deps.bullJob({ ...job, runAt: undefined, requeuedAt: now });
      const done = await queueTransitions.change({
        job,
        name: "requeued",
        input: { at: now, traceparent },
        remove: "required",
        add: { spec, at: now, metadata },
      });
      switch (done.kind) {
        case "applied":
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
            cancelReason: undefined,
            traceparent,
            requeuedAt: now,
          };
        case "busy":
          if (Date.now() < deadline) {
            await pause(25, signal);
            continue;
          }
          throw new FailedPreconditionError(
            `job ${jobId} is still being finished by its worker; retry in a moment`,
          );
        default: {
          // A script ioredis resent after losing the reply finds the job
          // re-queued by its own first run (this call's trace and time): the
          // call did what it was asked, whatever the job did since.
          const current = await jobs.get(jobId, signal);
          if (current?.requeuedAt === now && (current.traceparent ?? "") === traceparent)
            return current;
          throw new FailedPreconditionError(
            `job ${jobId} changed state meanwhile; read it and try again`,
          );
        }
      }
    }
  }
}
