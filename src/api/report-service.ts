/**
 * ReportService handlers: decode (validate), call, encode. No Redis or
 * BullMQ here; errors are mapped once by toConnectError. Every call below
 * gets the RPC's `ctx.signal` (queue/caller-signal.ts says what it stops).
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import type {
  CancelJobRequest,
  CancelJobResponseSchema,
  GetJobRequest,
  GetJobResponseSchema,
  ListJobsRequest,
  ListJobsResponseSchema,
  RetryJobRequest,
  RetryJobResponseSchema,
  SubmitReportRequest,
  SubmitReportResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import {
  type ReportService,
  WatchJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { JobNotFoundError, ShuttingDownError, WatchTimeLimitError } from "../domain/errors.js";
import type { JobView } from "../domain/job.js";
import type { EventHub } from "../events/event-hub.js";
import type { EventLog } from "../events/event-log.js";
import { watchJobEvents } from "../events/watch-job-events.js";
import type { CallerSignal } from "../queue/caller-signal.js";
import type { JobControl } from "../queue/job-control.js";
import type { JobLister } from "../queue/job-lister.js";
import type { JobReader } from "../queue/job-reader.js";
import type { Submitter } from "../queue/submitter.js";
import { callerTenant } from "./auth.js";
import type { DownloadSigner } from "./download-signer.js";
import { toConnectError } from "./error-map.js";
import { eventToProto, jobToProto } from "./proto-mapping.js";
import {
  validateCancelJob,
  validateGetJob,
  validateListJobs,
  validateSubmitReport,
  validateWatchJob,
} from "./validation.js";
import type { WatchLimiter } from "./watch-limiter.js";

/** What the handlers need. */
export interface ReportServiceDeps {
  submitter: Submitter;
  jobs: JobReader;
  control: JobControl;
  lister: JobLister;
  log: EventLog;
  hub: EventHub;
  /** Base of absolute URLs (status and download). */
  publicUrl: string;
  keepaliveMs: number;
  watchMaxDurationMs: number;
  /** How far ahead a submit's run_at may be, in ms. */
  maxRunAtAheadMs: number;
  /** Signs download URLs (result.download_url); unsigned paths without it. */
  downloadSigner?: DownloadSigner;
  /** Caps concurrent watches per tenant; no cap without it. */
  watchLimiter?: WatchLimiter;
  /** Aborted when the server shuts down; open watches then end with UNAVAILABLE. */
  shutdownSignal: AbortSignal;
  logger: Logger;
}

/** The status URL of a job (plain HTTP GET, JSON). */
export function statusUrl(publicUrl: string, jobId: string): string {
  return `${publicUrl}/v1/jobs/${encodeURIComponent(jobId)}`;
}

/**
 * Reads a job of the caller's tenant, or throws NOT_FOUND (also for other
 * tenants' jobs); nothing is read once `signal` has aborted.
 */
export async function getTenantJob(
  jobs: JobReader,
  tenant: string,
  jobId: string,
  signal?: CallerSignal,
): Promise<JobView> {
  const job = await jobs.get(jobId, signal);
  if (job === undefined || job.tenant !== tenant) throw new JobNotFoundError(jobId);
  return job;
}

/**
 * The unary methods without connect's handler context: what the
 * ReportService handlers and the lean unary routes (lean-unary.ts,
 * grpc-unary-route.ts) both call.
 * Errors are thrown as they are (the callers map them with toConnectError).
 */
export interface ReportCalls {
  submitReport(
    req: SubmitReportRequest,
    tenant: string,
    idempotencyKey: string | null,
    signal: CallerSignal,
  ): Promise<MessageInitShape<typeof SubmitReportResponseSchema>>;
  getJob(
    req: GetJobRequest,
    tenant: string,
    signal: CallerSignal,
  ): Promise<MessageInitShape<typeof GetJobResponseSchema>>;
  cancelJob(
    req: CancelJobRequest,
    tenant: string,
    signal: AbortSignal,
  ): Promise<MessageInitShape<typeof CancelJobResponseSchema>>;
  listJobs(
    req: ListJobsRequest,
    tenant: string,
    signal: AbortSignal,
  ): Promise<MessageInitShape<typeof ListJobsResponseSchema>>;
  retryJob(
    req: RetryJobRequest,
    tenant: string,
    signal: AbortSignal,
  ): Promise<MessageInitShape<typeof RetryJobResponseSchema>>;
}

/** Creates the calls behind the unary methods. */
export function createReportCalls(
  deps: Pick<
    ReportServiceDeps,
    "submitter" | "jobs" | "control" | "lister" | "publicUrl" | "downloadSigner" | "maxRunAtAheadMs"
  >,
): ReportCalls {
  const { submitter, jobs, control, lister, publicUrl } = deps;
  const signer = deps.downloadSigner;
  const toProto = (job: JobView) => jobToProto(job, publicUrl, signer);
  return {
    async submitReport(req, tenant, idempotencyKey, signal) {
      const input = validateSubmitReport(req, idempotencyKey, tenant, {
        maxRunAtAheadMs: deps.maxRunAtAheadMs,
      });
      const { job, deduplicated } = await submitter.submit(input, signal);
      return {
        jobId: job.id,
        statusUrl: statusUrl(publicUrl, job.id),
        job: toProto(job),
        deduplicated,
      };
    },
    async getJob(req, tenant, signal) {
      const jobId = validateGetJob(req);
      const job = await getTenantJob(jobs, tenant, jobId, signal);
      return { job: toProto(job) };
    },
    async cancelJob(req, tenant, signal) {
      const { jobId, reason } = validateCancelJob(req);
      const job = await control.cancel(tenant, jobId, reason, signal);
      return { job: toProto(job) };
    },
    async listJobs(req, tenant, signal) {
      const query = validateListJobs(req, tenant);
      const page = await lister.list(query, signal);
      return { jobs: page.jobs.map(toProto), nextPageToken: page.nextPageToken };
    },
    async retryJob(req, tenant, signal) {
      const jobId = validateGetJob(req);
      const job = await control.retry(tenant, jobId, signal);
      return { job: toProto(job) };
    },
  };
}

/** Creates the ReportService implementation. */
export function createReportService(deps: ReportServiceDeps): ServiceImpl<typeof ReportService> {
  const { log, hub, publicUrl, logger } = deps;
  const fail = (err: unknown) => toConnectError(err, logger);
  const signer = deps.downloadSigner;
  const calls = createReportCalls(deps);

  return {
    async submitReport(req, ctx) {
      try {
        return await calls.submitReport(
          req,
          callerTenant(ctx.values),
          ctx.requestHeader.get("idempotency-key"),
          ctx.signal,
        );
      } catch (err) {
        throw fail(err);
      }
    },

    async getJob(req, ctx) {
      try {
        return await calls.getJob(req, callerTenant(ctx.values), ctx.signal);
      } catch (err) {
        throw fail(err);
      }
    },

    async *watchJob(req, ctx: HandlerContext) {
      try {
        const { jobId, afterEventId } = validateWatchJob(req);
        const tenant = callerTenant(ctx.values);
        const release = deps.watchLimiter?.acquire(tenant);
        const sign = signer && ((path: string) => signer.sign(tenant, path));
        const maxDuration = AbortSignal.timeout(deps.watchMaxDurationMs);
        const signal = AbortSignal.any([ctx.signal, deps.shutdownSignal, maxDuration]);
        try {
          for await (const item of watchJobEvents(
            { log, hub },
            {
              jobId,
              tenant,
              afterEventId,
              signal,
              keepaliveMs: deps.keepaliveMs,
            },
          )) {
            yield item === null
              ? create(WatchJobResponseSchema, { keepaliveTime: timestampNow() })
              : create(WatchJobResponseSchema, { event: eventToProto(item, publicUrl, sign) });
          }
        } catch (err) {
          if (deps.shutdownSignal.aborted) throw new ShuttingDownError();
          if (maxDuration.aborted && !ctx.signal.aborted) {
            throw new WatchTimeLimitError(deps.watchMaxDurationMs);
          }
          throw err;
        } finally {
          release?.();
        }
      } catch (err) {
        throw fail(err);
      }
    },

    async cancelJob(req, ctx) {
      try {
        return await calls.cancelJob(req, callerTenant(ctx.values), ctx.signal);
      } catch (err) {
        throw fail(err);
      }
    },

    async listJobs(req, ctx) {
      try {
        return await calls.listJobs(req, callerTenant(ctx.values), ctx.signal);
      } catch (err) {
        throw fail(err);
      }
    },

    async retryJob(req, ctx) {
      try {
        return await calls.retryJob(req, callerTenant(ctx.values), ctx.signal);
      } catch (err) {
        throw fail(err);
      }
    },
  };
}
