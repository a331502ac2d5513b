import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  type Job,
  type JobEvent,
  JobEventType,
  JobState,
  ReportType,
} from "../../gen/reports/v1/job_pb.js";
import type { ReportGenerator } from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { killAllServices, type ServiceProcess, spawnService } from "../helpers/processes.js";
import {
  bullQueue,
  errorOf,
  getJob,
  type HistoryOptions,
  history,
  ms,
  type ReportClient,
  waitForState,
} from "../helpers/rpc.js";
import { startTestApp, type TestApp, testEnv, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** The deadline of every watch in this file: a watch that does not end fails the test. */
const watch: HistoryOptions = { timeoutMs: 30_000 };

function types(events: JobEvent[]): string[] {
  return events.map((e) => JobEventType[e.type]);
}

/**
 * Calls CancelJob and, at the same time, polls GetJob every 20 ms: returns
 * how long after the call the job was first seen CANCELLED, and the answer.
 */
async function measureCancel(
  client: ReportClient,
  jobId: string,
  reason: string,
): Promise<{ began: number; elapsedMs: number; answer: Job | undefined }> {
  const began = Date.now();
  const answer = client.cancelJob({ jobId, reason });
  answer.catch(() => undefined);
  await waitFor(async () => (await getJob(client, jobId)).state === JobState.CANCELLED, {
    timeoutMs: 10_000,
    intervalMs: 20,
    what: "the job to be CANCELLED",
  });
  const elapsedMs = Date.now() - began;
  return { began, elapsedMs, answer: (await answer).job };
}

describe("CancelJob with the worker in another process", () => {
  const apps: TestApp[] = [];
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await killAllServices();
    for (const close of closers) await close();
    for (const app of apps) await app.close();
  });

  /** An API in this process and a worker process sharing its prefix and artifact folder. */
  async function api(env: Record<string, string> = {}): Promise<TestApp> {
    const app = await startTestApp({ REDIS_PREFIX: testPrefix(), ...env }, { mode: "api" });
    apps.push(app);
    return app;
  }
  function worker(app: TestApp, env: Record<string, string>): Promise<ServiceProcess> {
    return spawnService(
      "worker",
      testEnv({
        REDIS_PREFIX: app.config.redis.prefix,
        ARTIFACT_DIR: app.config.worker.artifactDir,
        ...env,
      }),
    );
  }

  it("cancels QUEUED jobs at once and never runs them", async () => {
    const app = await api();
    const client = reportClient("grpc", app.url);

    // Queued while no worker exists.
    const early = await client.submitReport({ userId: "early", reportType: ReportType.WEEKLY });
    const { job: cancelled } = await client.cancelJob({ jobId: early.jobId, reason: "not needed" });
    expect(cancelled?.state).toBe(JobState.CANCELLED);
    expect(cancelled?.failureReason).toBe("not needed");
    expect(cancelled?.finishedAt).toBeDefined();
    // Twice is harmless: still CANCELLED, with the first reason.
    const { job: again } = await client.cancelJob({ jobId: early.jobId, reason: "again" });
    expect(again?.state).toBe(JobState.CANCELLED);
    expect(again?.failureReason).toBe("not needed");

    const proc = await worker(app, { REPORT_PHASE_DELAY_MS: "20" });
    // Queued for later while a worker is running.
    const later = await client.submitReport({
      userId: "later",
      reportType: ReportType.WEEKLY,
      runAt: timestampFromMs(Date.now() + 3600_000),
    });
    const { job: cancelledLater } = await client.cancelJob({ jobId: later.jobId });
    expect(cancelledLater?.state).toBe(JobState.CANCELLED);
    expect(cancelledLater?.failureReason).toBe("cancelled by request");

    // The worker has been at work for a while: a job submitted after both is done.
    const after = await client.submitReport({ userId: "after", reportType: ReportType.WEEKLY });
    await waitForState(client, after.jobId, JobState.SUCCEEDED);

    for (const jobId of [early.jobId, later.jobId]) {
      const events = await history(client, jobId, watch);
      expect(types(events), jobId).toEqual(["QUEUED", "CANCELLED"]);
      const job = await getJob(client, jobId);
      expect(job.state).toBe(JobState.CANCELLED);
      expect(job.startedAt).toBeUndefined();
      expect(job.attemptsMade).toBe(0);
    }
    expect((await history(client, early.jobId, watch)).at(-1)?.error).toBe("not needed");
    // Out of BullMQ too: nothing left that could run it.
    const bull = bullQueue(app.config.redis.prefix, app.config.redis.url);
    closers.push(bull.close);
    expect(await bull.queue.getJob(early.jobId)).toBeUndefined();
    expect(await bull.queue.getJob(later.jobId)).toBeUndefined();
    expect(proc.exit).toBeUndefined();
  });

  it("answers FAILED_PRECONDITION for a finished job and NOT_FOUND for an unknown one", async () => {
    const app = await api();
    const client = reportClient("connect-json", app.url);
    await worker(app, { REPORT_PHASE_DELAY_MS: "20" });
    const { jobId } = await client.submitReport({ userId: "done", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.SUCCEEDED);

    const err = await errorOf(client.cancelJob({ jobId }));
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.rawMessage).toMatch(/SUCCEEDED/);
    const job = await getJob(client, jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(job.failureReason).toBe("");
    expect((await errorOf(client.cancelJob({ jobId: "no-such-job" })))?.code).toBe(Code.NotFound);
    expect((await errorOf(client.cancelJob({ jobId: "" })))?.code).toBe(Code.InvalidArgument);
  });

  it("cancels a RETRYING job, which then never starts again", async () => {
    const app = await api();
    const client = reportClient("grpc", app.url);
    // Every attempt fails; the first retry is due 1-2 s after the failure.
    await worker(app, { REPORT_FAIL_RATE: "1", RETRY_BACKOFF_MS: "2000" });
    const { jobId } = await client.submitReport({ userId: "retry", reportType: ReportType.WEEKLY });
    const untilRetrying = await history(client, jobId, {
      ...watch,
      stop: (e) => e.type === JobEventType.RETRYING,
    });
    const retrying = untilRetrying.at(-1);
    expect(retrying?.type).toBe(JobEventType.RETRYING);
    const dueAt = ms(retrying?.nextAttemptAt);

    const { job } = await client.cancelJob({ jobId, reason: "stop retrying" });
    expect(job?.state).toBe(JobState.CANCELLED);
    expect(job?.failureReason).toBe("stop retrying");
    expect(job?.attemptsMade).toBe(1);
    expect(Date.now()).toBeLessThan(dueAt);

    // A clock job due after the retry would have been: once a worker has
    // started it, the cancelled job's turn has come and gone.
    const clock = await client.submitReport({
      userId: "clock",
      reportType: ReportType.WEEKLY,
      runAt: timestampFromMs(dueAt + 300),
    });
    await waitFor(async () => (await getJob(client, clock.jobId)).startedAt !== undefined, {
      timeoutMs: 15_000,
      what: "the clock job to start",
    });
    const events = await history(client, jobId, watch);
    expect(types(events)).toEqual(["QUEUED", "STARTED", "RETRYING", "CANCELLED"]);
    expect(events.at(-1)?.error).toBe("stop retrying");
    const final = await getJob(client, jobId);
    expect(final.state).toBe(JobState.CANCELLED);
    expect(final.attemptsMade).toBe(1);
  });

  it("cancels a RUNNING job in the worker process within 1 s, and does not retry it", async () => {
    const app = await api();
    const client = reportClient("grpc", app.url);
    // Phases of 3 s; no poll fallback within the test's time: the pub/sub message must do it.
    const proc = await worker(app, { REPORT_PHASE_DELAY_MS: "3000", CANCEL_POLL_MS: "60000" });
    const { jobId } = await client.submitReport({ userId: "run", reportType: ReportType.WEEKLY });
    const watched = history(reportClient("connect-json", app.url), jobId, watch);
    await waitForState(client, jobId, JobState.RUNNING);

    const reason = "user closed the page";
    const { began, elapsedMs, answer } = await measureCancel(client, jobId, reason);
    expect(elapsedMs, `cancelled after ${elapsedMs} ms`).toBeLessThanOrEqual(1000);
    expect(answer?.state).toBe(JobState.CANCELLED);

    // The watcher got the CANCELLED event, with the reason, and its watch ended.
    const events = await watched;
    expect(types(events)).toEqual(["QUEUED", "STARTED", "CANCELLED"]);
    const last = events.at(-1);
    expect(last?.state).toBe(JobState.CANCELLED);
    expect(last?.error).toBe(reason);
    expect(last?.attempt).toBe(1);
    const job = await getJob(client, jobId);
    expect(job.failureReason).toBe(reason);
    expect(job.attemptsMade).toBe(1);
    expect(job.result).toBeUndefined();
    await proc.waitForLog("cancel delivered to running job");

    // The attempt really ended at once (its 3 s phase was aborted), and BullMQ will not retry it.
    const bull = bullQueue(app.config.redis.prefix, app.config.redis.url);
    closers.push(bull.close);
    await waitFor(async () => (await bull.queue.getJobState(jobId)) === "failed", {
      what: "BullMQ to fail the cancelled job for good",
    });
    const bullJob = await bull.queue.getJob(jobId);
    expect(bullJob?.finishedOn).toBeDefined();
    expect((bullJob?.finishedOn ?? 0) - began).toBeLessThan(1500);
    expect(bullJob?.attemptsMade).toBe(1);
    expect(types(await history(client, jobId, watch))).toEqual(["QUEUED", "STARTED", "CANCELLED"]);
    const { jobs } = await client.listJobs({ states: [JobState.CANCELLED] });
    expect(jobs.map((j) => j.id)).toEqual([jobId]);
  });
});

describe("CancelJob with an in-process worker", () => {
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  afterEach(async () => {
    redis?.disconnect();
    await t?.close();
    t = undefined;
    redis = undefined;
  });

  /** A generator that reports progress, then waits for its signal, recording what it saw. */
  function abortWatcher(): ReportGenerator & {
    calls: number;
    seen: { aborted: boolean; reason: unknown; at: number }[];
  } {
    const g = {
      calls: 0,
      seen: [] as { aborted: boolean; reason: unknown; at: number }[],
      async generate(
        _input: unknown,
        progress: (percent: number, phase: string) => Promise<void>,
        signal: AbortSignal,
      ): Promise<never> {
        g.calls++;
        await progress(40, "fetch-data");
        return new Promise<never>((_resolve, reject) => {
          signal.addEventListener(
            "abort",
            () => {
              g.seen.push({ aborted: signal.aborted, reason: signal.reason, at: Date.now() });
              reject(signal.reason);
            },
            { once: true },
          );
        });
      },
    };
    return g;
  }

  it("aborts the generator's signal when its job is cancelled", async () => {
    const generator = abortWatcher();
    t = await startTestApp({ CANCEL_POLL_MS: "60000" }, { generators: { weekly: generator } });
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "sig", reportType: ReportType.WEEKLY });
    const watched = history(client, jobId, watch);
    await waitFor(async () => (await getJob(client, jobId)).progress === 40, {
      what: "the generator to be running",
    });

    const { began, elapsedMs } = await measureCancel(client, jobId, "changed my mind");
    expect(elapsedMs).toBeLessThanOrEqual(1000);
    expect(generator.seen).toHaveLength(1);
    expect(generator.seen[0]?.aborted).toBe(true);
    expect(generator.seen[0]?.reason).toBe("job cancelled");
    expect((generator.seen[0]?.at ?? 0) - began).toBeLessThanOrEqual(1000);
    const events = await watched;
    expect(types(events)).toEqual(["QUEUED", "STARTED", "PROGRESS", "CANCELLED"]);
    expect(events.at(-1)?.error).toBe("changed my mind");
    expect(generator.calls).toBe(1);
  });

  it("cancels through the poll fallback when the pub/sub message was missed", async () => {
    const generator = abortWatcher();
    t = await startTestApp({ CANCEL_POLL_MS: "200" }, { generators: { weekly: generator } });
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "poll", reportType: ReportType.WEEKLY });
    await waitFor(async () => (await getJob(client, jobId)).progress === 40, {
      what: "the generator to be running",
    });

    // What CancelJob writes, minus the PUBLISH: only the poll can notice it.
    redis = new Redis(t.config.redis.url);
    const began = Date.now();
    await redis.hset(t.app.keys.job(jobId), "cancelReq", "missed message");
    const job = await waitForState(client, jobId, JobState.CANCELLED, 5000);
    const elapsedMs = Date.now() - began;
    expect(elapsedMs, `cancelled after ${elapsedMs} ms`).toBeLessThanOrEqual(1000);
    expect(job.failureReason).toBe("missed message");
    expect(generator.seen).toHaveLength(1);
    expect(generator.seen[0]?.reason).toBe("job cancelled");
    expect(types(await history(client, jobId, watch))).toEqual([
      "QUEUED",
      "STARTED",
      "PROGRESS",
      "CANCELLED",
    ]);
  });
});
