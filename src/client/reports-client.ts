/**
 * The typed Node client of reports.v1.ReportService, for programs:
 *
 *     const client = createReportsClient({ baseUrl: "http://127.0.0.1:8080", protocol: "grpc" });
 *     const { jobId } = await client.submitReport({ userId: "alice", reportType: ReportType.WEEKLY });
 *     for await (const event of client.watchJob(jobId)) console.log(event.progress, event.phase);
 *
 * On top of the generated client it adds three things:
 * - `Authorization: Bearer <apiKey>` on every call when an API key is given;
 * - bounded retries with exponential backoff and full jitter on UNAVAILABLE
 *   (and a connection reset) for the calls that are safe to repeat: GetJob and
 *   ListJobs (no side effects), CancelJob (cancelling a cancelled job returns
 *   it unchanged, so a repeat cannot do more than the first call), and
 *   SubmitReport only when it carries an idempotency key (then a repeat
 *   returns the same job). RetryJob is never repeated: if the first call
 *   landed and the job failed again, a second one would run it once more.
 * - `watchJob(jobId, options)`: the job's events as an async iterable that
 *   resumes after the last event it yielded when the stream drops (server
 *   restart, UNAVAILABLE, a reset connection), skips keepalives, and ends
 *   after the terminal event. `watchJob(request)` is still the plain RPC.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import type { JobEvent } from "../../gen/reports/v1/job_pb.js";
import {
  ReportService,
  type WatchJobRequestSchema,
  type WatchJobResponse,
} from "../../gen/reports/v1/report_service_pb.js";
import { type BackoffPolicy, backoffMs, sleep } from "./backoff.js";
import { followJob, isConnectionReset } from "./follow-job.js";

export {
  type Job,
  type JobEvent,
  JobEventType,
  JobPriority,
  JobState,
  ReportType,
} from "../../gen/reports/v1/job_pb.js";
export { ReportService } from "../../gen/reports/v1/report_service_pb.js";

/** The wire protocol: gRPC (HTTP/2), Connect (binary over HTTP/2 by default) or gRPC-Web (HTTP/1.1). */
export type ReportsProtocol = "grpc" | "connect" | "grpc-web";

/** Retry policy for UNAVAILABLE on calls that are safe to repeat. */
export interface RetryOptions {
  /** Attempts in all, the first included (default 4; 1 turns retries off). */
  maxAttempts?: number;
  /** Upper bound of the first backoff, in ms (default 100); doubles per attempt. */
  initialDelayMs?: number;
  /** Largest backoff, in ms (default 2000). */
  maxDelayMs?: number;
}

/** Options of createReportsClient. */
export interface ReportsClientOptions {
  /** The API's base URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Default "connect". */
  protocol?: ReportsProtocol;
  /** Sent as `Authorization: Bearer <apiKey>` on every call. */
  apiKey?: string;
  /** Overrides the protocol's HTTP version (gRPC is always HTTP/2). */
  httpVersion?: "1.1" | "2";
  /** Connect only: JSON instead of binary protobuf on the wire (default false). */
  useJson?: boolean;
  retry?: RetryOptions;
  /** Consecutive failed reconnects of `watchJob(jobId)` without a new event before it gives up (default 10). */
  maxWatchReconnects?: number;
  /** Extra interceptors, run after the client's own (auth, retry). */
  interceptors?: Interceptor[];
}

/** Options of the resumable `watchJob(jobId, options)`. */
export interface WatchOptions {
  /** Start after this event id (a cursor from an earlier watch); default: the job's first event. */
  afterEventId?: string;
  /** Ends the watch; the iterator then throws a CANCELED ConnectError. */
  signal?: AbortSignal;
}

/** The typed ReportService client, with a resumable `watchJob(jobId)`. */
export type ReportsClient = Omit<Client<typeof ReportService>, "watchJob"> & {
  /** Follows a job to its end, resuming after the last event on a dropped stream. */
  watchJob(jobId: string, options?: WatchOptions): AsyncIterable<JobEvent>;
  /** The plain WatchJob RPC (one stream, keepalives included, no resume). */
  watchJob(
    request: MessageInitShape<typeof WatchJobRequestSchema>,
    options?: CallOptions,
  ): AsyncIterable<WatchJobResponse>;
};

/** Creates a client; its HTTP/2 sessions close when idle, so it needs no close(). */
export function createReportsClient(options: ReportsClientOptions): ReportsClient {
  const interceptors: Interceptor[] = [];
  if (options.apiKey !== undefined && options.apiKey !== "") {
    interceptors.push(bearerAuth(options.apiKey));
  }
  interceptors.push(retryUnavailable(options.retry ?? {}), ...(options.interceptors ?? []));
  const rpc = createClient(ReportService, transportFor(options, interceptors));
  const maxReconnects = options.maxWatchReconnects ?? 10;
  const retry = resolveRetry(options.retry ?? {});

  function watchJob(
    jobIdOrRequest: string | MessageInitShape<typeof WatchJobRequestSchema>,
    opts?: WatchOptions | CallOptions,
  ): AsyncIterable<JobEvent> | AsyncIterable<WatchJobResponse> {
    if (typeof jobIdOrRequest === "string") {
      const jobId = jobIdOrRequest;
      const watch = (opts ?? {}) as WatchOptions;
      return followJob({
        open: (afterEventId, signal) => rpc.watchJob({ jobId, afterEventId }, { signal }),
        afterEventId: watch.afterEventId,
        signal: watch.signal,
        maxReconnects,
        backoff: retry,
      });
    }
    return rpc.watchJob(jobIdOrRequest, opts as CallOptions | undefined);
  }

  return {
    submitReport: rpc.submitReport,
    getJob: rpc.getJob,
    cancelJob: rpc.cancelJob,
    listJobs: rpc.listJobs,
    retryJob: rpc.retryJob,
    watchJob: watchJob as ReportsClient["watchJob"],
  };
}

function transportFor(options: ReportsClientOptions, interceptors: Interceptor[]): Transport {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  switch (options.protocol ?? "connect") {
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors });
    case "grpc-web":
      return createGrpcWebTransport({
        baseUrl,
        httpVersion: options.httpVersion ?? "1.1",
        interceptors,
      });
    case "connect":
      return createConnectTransport({
        baseUrl,
        httpVersion: options.httpVersion ?? "2",
        useBinaryFormat: !options.useJson,
        interceptors,
      });
  }
}

/** Adds `Authorization: Bearer <apiKey>`. */
function bearerAuth(apiKey: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${apiKey}`);
    return next(req);
  };
}

/** Methods safe to repeat whatever their request. */
const alwaysSafe = new Set(["GetJob", "ListJobs", "CancelJob"]);

/** Whether repeating this unary request cannot do more than sending it once. */
function isSafeToRepeat(methodName: string, message: unknown, header: Headers): boolean {
  if (alwaysSafe.has(methodName)) return true;
  if (methodName === "SubmitReport") {
    const key = (message as { idempotencyKey?: string }).idempotencyKey ?? "";
    return key !== "" || (header.get("idempotency-key") ?? "") !== "";
  }
  return false;
}

/** Retries UNAVAILABLE (and a connection reset) on unary calls that are safe to repeat. */
function retryUnavailable(options: RetryOptions): Interceptor {
  const policy = resolveRetry(options);
  return (next) => async (req) => {
    if (req.stream || !isSafeToRepeat(req.method.name, req.message, req.header)) return next(req);
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        const ce = ConnectError.from(err);
        const transient =
          ce.code === Code.Unavailable ||
          isConnectionReset(ce) ||
          (ce.code === Code.Canceled && !req.signal.aborted);
        if (!transient || attempt >= policy.maxAttempts || req.signal.aborted) throw ce;
        await sleep(backoffMs(attempt, policy), req.signal);
      }
    }
  };
}

/** The retry options with their defaults; maxAttempts at least 1. */
function resolveRetry(o: RetryOptions): { maxAttempts: number } & BackoffPolicy {
  return {
    maxAttempts: Math.max(1, o.maxAttempts ?? 4),
    initialDelayMs: o.initialDelayMs ?? 100,
    maxDelayMs: o.maxDelayMs ?? 2000,
  };
}
