import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import {
  type Job,
  type JobEvent,
  JobEventType,
  JobState,
  ReportType,
} from "../../gen/reports/v1/job_pb.js";
import type { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { queueNameFor } from "../../src/queue/keys.js";
import {
  type ReportGenerator,
  type ReportOutput,
  TransientReportError,
} from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

type ReportClient = Client<typeof ReportService>;

const output: ReportOutput = { fileName: "r.csv", contentType: "text/csv", content: "day,n\n" };

/**
 * A weekly generator that fails transiently while `healthy` is false; once
 * healthy, each call waits for `gate` (open by default) and succeeds.
 */
function flaky(): ReportGenerator & {
  healthy: boolean;
  calls: number[];
  hold(): () => void;
} {
  let gate: Promise<void> = Promise.resolve();
  const g = {
    healthy: false,
    calls: [] as number[],
    hold() {
      let open!: () => void;
      gate = new Promise<void>((r) => {
        open = r;
      });
      return open;
    },
    async generate(
      input: { attempt: number },
      progress: (p: number, phase: string) => Promise<void>,
    ) {
      g.calls.push(input.attempt);
      if (!g.healthy) throw new TransientReportError("downstream still down");
      await progress(40, "fetch-data");
      await gate;
      return output;
    },
  };
  return g;
}

/** Collects a watch from its first event; `onEvent` runs for each one. */
async function watchAll(
  client: ReportClient,
  jobId: string,
  onEvent: (e: JobEvent) => void = () => {},
): Promise<JobEvent[]> {
  const events: JobEvent[] = [];
  for await (const res of client.watchJob({ jobId }, { signal: AbortSignal.timeout(20_000) })) {
    if (res.event === undefined) continue;
    events.push(res.event);
    onEvent(res.event);
  }
  return events;
}

/** "TYPE(attempt)" for each event, with the phase of QUEUED events, e.g. "QUEUED(0,retry)". */
function outline(events: JobEvent[]): string[] {
  return events.map((e) =>
    e.type === JobEventType.QUEUED && e.phase !== ""
      ? `QUEUED(${e.attempt},${e.phase})`
      : `${JobEventType[e.type]}(${e.attempt})`,
  );
}

async function getJob(client: ReportClient, jobId: string): Promise<Job> {
  const { job } = await client.getJob({ jobId });
  if (job === undefined) throw new Error("GetJob returned no job");
  return job;
}

function waitForState(client: ReportClient, jobId: string, state: JobState): Promise<Job> {
  return waitFor(
    async () => {
      const job = await getJob(client, jobId);
      return job.state === state ? job : undefined;
    },
    { timeoutMs: 15_000, what: `job ${jobId} to be ${JobState[state]}` },
  );
}

async function codeOf(call: Promise<unknown>): Promise<Code | undefined> {
  try {
    await call;
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("dead letters and RetryJob", () => {
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  let queue: Queue | undefined;
  afterEach(async () => {
    await queue?.close();
    redis?.disconnect();
    await t?.close();
    t = undefined;
    queue = undefined;
    redis = undefined;
  });

  async function start(generator: ReportGenerator): Promise<ReportClient> {
    t = await startTestApp(
      { JOB_ATTEMPTS: "2", RETRY_BACKOFF_MS: "50" },
      { generators: { weekly: generator } },
    );
    return reportClient("grpc", t.url);
  }

  it("re-runs a dead-lettered job under the same id, continuing one event history to SUCCEEDED", async () => {
    const generator = flaky();
    const client = await start(generator);
    const { jobId } = await client.submitReport({ userId: "dlq", reportType: ReportType.WEEKLY });

    // Exhausted attempts: FAILED, and listed as such.
    const failed = await waitForState(client, jobId, JobState.FAILED);
    expect(failed.attemptsMade).toBe(2);
    expect(failed.failureReason).toBe("downstream still down");
    const { jobs: dead } = await client.listJobs({ states: [JobState.FAILED] });
    expect(dead.map((j) => j.id)).toEqual([jobId]);
    const firstRun = await watchAll(client, jobId);
    expect(outline(firstRun)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "FAILED(2)",
    ]);

    // The downstream is back; the re-run is held mid-way so a watch can join while it runs.
    generator.healthy = true;
    const open = generator.hold();
    const { job: requeued } = await client.retryJob({ jobId });
    expect(requeued?.id).toBe(jobId);
    expect(requeued?.state).toBe(JobState.QUEUED);
    expect(requeued?.attemptsMade).toBe(0);
    expect(requeued?.failureReason).toBe("");
    expect(requeued?.finishedAt).toBeUndefined();

    // A watch from the start replays the first run, its FAILED, and carries on live.
    let sawRerunStart = false;
    const watched = watchAll(client, jobId, (e) => {
      if (e.type === JobEventType.PROGRESS && e.attempt === 1 && !sawRerunStart) {
        sawRerunStart = true;
        open();
      }
    });
    const events = await watched;
    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "FAILED(2)",
      "QUEUED(0,retry)",
      "STARTED(1)",
      "PROGRESS(1)",
      "SUCCEEDED(1)",
    ]);
    // Same stream: the first run's ids come first, unchanged.
    expect(events.slice(0, 5).map((e) => e.id)).toEqual(firstRun.map((e) => e.id));
    expect(events[5]?.state).toBe(JobState.QUEUED);

    const job = await getJob(client, jobId);
    expect(job.id).toBe(jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(job.attemptsMade).toBe(1);
    expect(job.failureReason).toBe("");
    expect(job.result?.downloadUrl).toMatch(/\/v1\/artifacts\//);
    expect(generator.calls).toEqual([1, 2, 1]);

    // ListJobs shows one job, now SUCCEEDED; nothing is left FAILED.
    const { jobs: all } = await client.listJobs({});
    expect(all.map((j) => [j.id, j.state])).toEqual([[jobId, JobState.SUCCEEDED]]);
    expect((await client.listJobs({ states: [JobState.FAILED] })).jobs).toEqual([]);
  });

  it("re-runs a FAILED job whose BullMQ entry is already gone", async () => {
    const generator = flaky();
    const client = await start(generator);
    const { jobId } = await client.submitReport({ userId: "gone", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.FAILED);
    if (t === undefined) throw new Error("no app");
    redis = new Redis(t.config.redisUrl, { maxRetriesPerRequest: null });
    queue = new Queue(queueNameFor("weekly"), {
      connection: redis,
      prefix: `${t.config.redisPrefix}:bull`,
    });
    const q = queue;
    await waitFor(async () => (await q.getJobState(jobId)) === "failed", {
      what: "BullMQ to fail the job",
    });
    await q.remove(jobId);
    expect(await q.getJob(jobId)).toBeUndefined();

    generator.healthy = true;
    await client.retryJob({ jobId });
    const job = await waitForState(client, jobId, JobState.SUCCEEDED);
    expect(job.attemptsMade).toBe(1);
    expect(job.maxAttempts).toBe(2);
  });

  it("gives a job retried after its attempts ran out a fresh set of attempts", async () => {
    const generator = flaky();
    const client = await start(generator);
    const { jobId } = await client.submitReport({ userId: "twice", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.FAILED);

    // Still failing: the replay uses its own two attempts, then dead-letters again.
    await client.retryJob({ jobId });
    const again = await waitFor(
      async () => {
        const job = await getJob(client, jobId);
        return job.state === JobState.FAILED && generator.calls.length === 4 ? job : undefined;
      },
      { what: "the replay to fail again" },
    );
    expect(again.attemptsMade).toBe(2);
    expect(generator.calls).toEqual([1, 2, 1, 2]);
    const events = await watchAll(client, jobId);
    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "FAILED(2)",
      "QUEUED(0,retry)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "FAILED(2)",
    ]);
  });

  it("answers FAILED_PRECONDITION for a job that is not FAILED, and NOT_FOUND for an unknown one", async () => {
    const generator = flaky();
    generator.healthy = true;
    const open = generator.hold();
    const client = await start(generator);
    const { jobId } = await client.submitReport({ userId: "ok", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.RUNNING);
    expect(await codeOf(client.retryJob({ jobId }))).toBe(Code.FailedPrecondition);
    open();
    await waitForState(client, jobId, JobState.SUCCEEDED);
    expect(await codeOf(client.retryJob({ jobId }))).toBe(Code.FailedPrecondition);
    const job = await getJob(client, jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(job.attemptsMade).toBe(1);
    expect(await codeOf(client.retryJob({ jobId: "no-such-job" }))).toBe(Code.NotFound);
    expect(await codeOf(client.retryJob({ jobId: "" }))).toBe(Code.InvalidArgument);
  });
});
