import { Code } from "@connectrpc/connect";
import { type Job, UnrecoverableError } from "bullmq";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { recordField } from "../../src/queue/job-record.js";
import { createKeys } from "../../src/queue/keys.js";
import type { ReportJobData } from "../../src/queue/submitter.js";
import { type ReportGenerator, TransientReportError } from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import {
  type BullQueue,
  bullQueue,
  codeOf,
  getJob,
  history,
  outlineWithPhases,
  type ReportClient,
  waitForState,
} from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

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
  const g = Object.assign(
    scripted(async (_input, progress) => {
      if (!g.healthy) throw new TransientReportError("downstream still down");
      await progress(40, "fetch-data");
      await gate;
      return csvOutput;
    }),
    {
      healthy: false,
      hold() {
        const { promise, resolve } = deferred();
        gate = promise;
        return resolve;
      },
    },
  );
  return g;
}

describe("dead letters and RetryJob", () => {
  let t: TestApp | undefined;
  let bull: BullQueue | undefined;
  afterEach(async () => {
    await bull?.close();
    await t?.close();
    t = undefined;
    bull = undefined;
  });

  async function start(
    generator: ReportGenerator,
    env: Record<string, string> = {},
  ): Promise<ReportClient> {
    t = await startTestApp(
      { JOB_ATTEMPTS: "2", RETRY_BACKOFF_MS: "50", ...env },
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
    const firstRun = await history(client, jobId);
    expect(outlineWithPhases(firstRun)).toEqual([
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
    const watched = history(client, jobId, {
      onEvent: (e) => {
        if (e.type === JobEventType.PROGRESS && e.attempt === 1 && !sawRerunStart) {
          sawRerunStart = true;
          open();
        }
      },
    });
    const events = await watched;
    expect(outlineWithPhases(events)).toEqual([
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
    bull = bullQueue(t.config.redis.prefix, t.config.redis.url);
    const q = bull.queue;
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
    // The new BullMQ job tells its worker when the re-run was queued (the
    // STARTED log line's queued_ms, the enqueue-to-complete metric): the
    // record's requeuedAt, not the job's first submit.
    const redis = new Redis(t.config.redis.url);
    try {
      const keys = createKeys(t.config.redis.prefix);
      const requeuedAt = Number(await redis.hget(keys.job(jobId), recordField.requeuedAt));
      const createdAt = Number(await redis.hget(keys.job(jobId), recordField.createdAt));
      expect(requeuedAt).toBeGreaterThan(createdAt);
      const data = (await q.getJob(jobId))?.data as ReportJobData;
      expect(data).toMatchObject({ queuedAt: requeuedAt, idempotencyKeyDigest: "" });
    } finally {
      redis.disconnect();
    }
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
    const events = await history(client, jobId);
    expect(outlineWithPhases(events)).toEqual([
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

  it("ignores a late BullMQ 'failed' event of the run before a RetryJob", async () => {
    // BullMQ emits 'failed' after it has moved the job, and by then RetryJob
    // may have queued the job again: recording that old failure would fail
    // the new run (a race seen in CI). The worker leaves alone failures the
    // processor recorded itself, and failures of runs that began before the
    // job's last RetryJob. Here the late events are emitted again by hand
    // while the re-run is held, which makes the race deterministic.
    const generator = flaky();
    // One weekly job at a time: the sentinel below stays queued behind the held re-run.
    const client = await start(generator, { WEEKLY_CONCURRENCY: "1" });
    const worker = t?.app.worker?.workers.weekly;
    if (worker === undefined) throw new Error("no worker");
    const seen: { job: Job; err: Error }[] = [];
    worker.on("failed", (job, err) => {
      if (job?.finishedOn) seen.push({ job, err });
    });
    const { jobId } = await client.submitReport({ userId: "late", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.FAILED);
    const last = await waitFor(() => seen.find((s) => s.job.id === jobId), {
      what: "BullMQ's 'failed' event of the last attempt",
    });

    generator.healthy = true;
    const open = generator.hold();
    await client.retryJob({ jobId });
    await waitFor(async () => (await getJob(client, jobId)).progress === 40, {
      what: "the re-run to be held mid-way",
    });

    // 'failed' events as BullMQ emits them: of a job (id, attempts, when its
    // run began and ended) with the error its processor threw.
    const event = (id: string, processedOn: number | undefined, err: Error) =>
      worker.emit(
        "failed",
        { id, finishedOn: Date.now(), attemptsMade: 1, processedOn } as unknown as Job,
        err,
        "active",
      );
    // A failure the processor recorded itself (its error is a RecordedEnd),
    // even of a run that began after the RetryJob: never recorded again...
    expect(last.err).toBeInstanceOf(UnrecoverableError);
    event(jobId, Date.now(), last.err);
    // ...and a failure BullMQ would have recorded on its own, of the run
    // before the RetryJob.
    event(jobId, last.job.processedOn, new Error("job stalled more than allowable limit"));
    // A sentinel recorded after both (the worker records failures in the
    // order their events come, on one connection): a job that is only
    // queued, failed by a 'failed' event of a run that began after any RetryJob.
    const { jobId: sentinel } = await client.submitReport({
      userId: "sentinel",
      reportType: ReportType.WEEKLY,
    });
    event(sentinel, Date.now(), new Error("sentinel failure"));
    const failedSentinel = await waitForState(client, sentinel, JobState.FAILED);
    expect(failedSentinel.failureReason).toBe("sentinel failure");

    // The re-run was not touched: it goes on to succeed.
    expect((await getJob(client, jobId)).state).toBe(JobState.RUNNING);
    open();
    const done = await waitForState(client, jobId, JobState.SUCCEEDED);
    expect(done.failureReason).toBe("");
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
