/**
 * What tests of ReportService keep doing with its answers: read the error a
 * call fails with, fetch a job, wait for a job's state, read a job's event
 * history, and look at what BullMQ holds for a job.
 */
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, type Code, ConnectError } from "@connectrpc/connect";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { type Job, type JobEvent, JobEventType, JobState } from "../../gen/reports/v1/job_pb.js";
import type { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { queueNameFor } from "../../src/queue/keys.js";
import { waitFor } from "./wait-for.js";

/** A typed ReportService client, as `reportClient()` returns it. */
export type ReportClient = Client<typeof ReportService>;

/** Milliseconds since the epoch of a timestamp that must be set (throws when it is missing). */
export function ms(ts: Timestamp | undefined): number {
  if (ts === undefined) throw new Error("timestamp missing");
  return timestampMs(ts);
}

/** Awaits `call`: undefined when it succeeds, else the ConnectError it rejects with. */
export async function errorOf(call: Promise<unknown>): Promise<ConnectError | undefined> {
  try {
    await call;
    return undefined;
  } catch (err) {
    return ConnectError.from(err);
  }
}

/** Awaits `call`: undefined when it succeeds, else the code of the error it rejects with. */
export async function codeOf(call: Promise<unknown>): Promise<Code | undefined> {
  return (await errorOf(call))?.code;
}

/** Awaits `call` and returns the ConnectError it rejects with; throws if it succeeds. */
export async function connectErrorOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

/** The job `jobId` as GetJob answers it; throws when the answer has no job. */
export async function getJob(client: ReportClient, jobId: string): Promise<Job> {
  const { job } = await client.getJob({ jobId });
  if (job === undefined) throw new Error("GetJob returned no job");
  return job;
}

/** Polls GetJob until the job is in `state` (within `timeoutMs`) and returns it. */
export function waitForState(
  client: ReportClient,
  jobId: string,
  state: JobState,
  timeoutMs = 15_000,
): Promise<Job> {
  let last: Job | undefined;
  return waitFor(
    async () => {
      const job = await getJob(client, jobId);
      last = job;
      return job.state === state ? job : undefined;
    },
    {
      timeoutMs,
      what: () => `job ${jobId} to be ${JobState[state]} (last seen: ${describeJob(last)})`,
    },
  );
}

/** What a timed-out wait last saw of a job, for its error message. */
function describeJob(job: Job | undefined): string {
  if (job === undefined) return "nothing";
  return `${JobState[job.state]}, phase "${job.phase}", attempts ${job.attemptsMade}, progress ${job.progress}${job.failureReason ? `, failure "${job.failureReason}"` : ""}`;
}

/** The states a job does not leave on its own. */
const endedStates: ReadonlySet<JobState> = new Set([
  JobState.SUCCEEDED,
  JobState.FAILED,
  JobState.CANCELLED,
]);

/** Polls GetJob until the job has ended, whichever way (SUCCEEDED, FAILED or CANCELLED), and returns it. */
export function waitForEnd(
  client: ReportClient,
  jobId: string,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<Job> {
  return waitFor(async () => {
    const { job } = await client.getJob({ jobId });
    return job !== undefined && endedStates.has(job.state) ? job : undefined;
  }, options);
}

/** How `history()` reads a job's events. */
export interface HistoryOptions {
  /** The watch's deadline, in milliseconds: a watch that does not end fails the test. Default 20 s. */
  timeoutMs?: number;
  /** Runs for each event as it arrives (after it is recorded). */
  onEvent?: (event: JobEvent) => void;
  /** Stops the watch after the first event for which this holds (that event included). */
  stop?: (event: JobEvent) => boolean;
}

/**
 * Watches `jobId` from its first event until the watch ends (or `stop`
 * holds); returns every event, in order. The watch is cancelled on the way
 * out, since leaving the loop does not cancel a Connect stream.
 */
export async function history(
  client: ReportClient,
  jobId: string,
  options: HistoryOptions = {},
): Promise<JobEvent[]> {
  const { timeoutMs = 20_000, onEvent, stop } = options;
  const events: JobEvent[] = [];
  const done = new AbortController();
  const signal = AbortSignal.any([done.signal, AbortSignal.timeout(timeoutMs)]);
  try {
    for await (const res of client.watchJob({ jobId }, { signal })) {
      if (res.event === undefined) continue;
      events.push(res.event);
      onEvent?.(res.event);
      if (stop?.(res.event)) break;
    }
  } finally {
    done.abort();
  }
  return events;
}

/** "TYPE(attempt)" for each event, e.g. "STARTED(2)". */
export function outline(events: readonly JobEvent[]): string[] {
  return events.map((e) => `${JobEventType[e.type]}(${e.attempt})`);
}

/**
 * Like `outline()`, with the phase of QUEUED events that have one, e.g.
 * "QUEUED(0,retry)" for a job put back by RetryJob.
 */
export function outlineWithPhases(events: readonly JobEvent[]): string[] {
  return events.map((e) =>
    e.type === JobEventType.QUEUED && e.phase !== ""
      ? `QUEUED(${e.attempt},${e.phase})`
      : `${JobEventType[e.type]}(${e.attempt})`,
  );
}

/** A BullMQ queue handle with its own Redis connection; `close()` releases both. */
export interface BullQueue {
  readonly queue: Queue;
  close(): Promise<void>;
}

/**
 * The weekly report queue under `prefix` on `redisUrl`, to see what BullMQ
 * holds for a job (whether it still means to run it).
 */
export function bullQueue(prefix: string, redisUrl: string): BullQueue {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(queueNameFor("weekly"), { connection, prefix: `${prefix}:bull` });
  return {
    queue,
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
}
