import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Queue } from "bullmq";
import { afterEach, describe, expect, it } from "vitest";
import { JobEventType, JobPriority, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import type { ReportGenerator, ReportInput } from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred } from "../helpers/generators.js";
import {
  type BullQueue,
  bullQueue,
  getJob,
  history,
  ms,
  outline,
  type ReportClient,
} from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** Rejects with the signal's reason once it aborts; never resolves otherwise. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

/** A weekly generator that hangs until its signal aborts, recording each call and each abort. */
function hanging(): ReportGenerator & {
  calls: ReportInput[];
  aborts: { attempt: number; reason: unknown; afterMs: number }[];
} {
  const calls: ReportInput[] = [];
  const aborts: { attempt: number; reason: unknown; afterMs: number }[] = [];
  return {
    calls,
    aborts,
    async generate(input, _progress, signal) {
      calls.push(input);
      const began = Date.now();
      signal.addEventListener(
        "abort",
        () =>
          aborts.push({
            attempt: input.attempt,
            reason: signal.reason,
            afterMs: Date.now() - began,
          }),
        { once: true },
      );
      return untilAborted(signal);
    },
  };
}

describe("run timeouts, deadlines, run_at and priority", () => {
  let t: TestApp | undefined;
  let bull: BullQueue | undefined;
  afterEach(async () => {
    await bull?.close();
    await t?.close();
    t = undefined;
    bull = undefined;
  });

  async function start(
    env: Record<string, string>,
    generator?: ReportGenerator,
  ): Promise<{ client: ReportClient; app: TestApp }> {
    t = await startTestApp(env, generator ? { generators: { weekly: generator } } : {});
    return { client: reportClient("grpc", t.url), app: t };
  }

  /** The BullMQ view of a weekly job: tells whether BullMQ still means to run it. */
  function weeklyQueue(app: TestApp): Queue {
    bull = bullQueue(app.config.redis.prefix, app.config.redis.url);
    return bull.queue;
  }

  it("aborts a hanging generator at the type's timeout, retries it, then fails after the last attempt", async () => {
    const generator = hanging();
    const { client } = await start(
      { WEEKLY_TIMEOUT_MS: "300", JOB_ATTEMPTS: "2", RETRY_BACKOFF_MS: "50" },
      generator,
    );
    const { jobId } = await client.submitReport({ userId: "hang", reportType: ReportType.WEEKLY });
    const events = await history(client, jobId);
    const job = await getJob(client, jobId);

    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "FAILED(2)",
    ]);
    // Each attempt's signal fired at the timeout, not before.
    expect(generator.calls.map((c) => c.attempt)).toEqual([1, 2]);
    expect(generator.aborts.map((a) => a.attempt)).toEqual([1, 2]);
    for (const a of generator.aborts) {
      expect(a.reason).toMatchObject({ name: "TimeoutError" });
      expect(a.afterMs).toBeGreaterThanOrEqual(280);
      expect(a.afterMs).toBeLessThan(3000);
    }
    const retrying = events.find((e) => e.type === JobEventType.RETRYING);
    expect(retrying?.error).toMatch(/timed out after 300 ms/);
    expect(retrying?.nextAttemptAt).toBeDefined();
    expect(events.at(-1)?.error).toMatch(/timed out after 300 ms/);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.attemptsMade).toBe(2);
    expect(job.failureReason).toMatch(/timed out after 300 ms/);
  });

  it("fails a job whose deadline has already passed without ever starting it", async () => {
    const generator = hanging();
    const { client, app } = await start({}, generator);
    const deadline = Date.now() - 1000;
    const { jobId, job: accepted } = await client.submitReport({
      userId: "late",
      reportType: ReportType.WEEKLY,
      deadline: timestampFromMs(deadline),
    });
    expect(ms(accepted?.deadline)).toBe(deadline);

    // Read the history once the job has ended: this job ends within
    // milliseconds, and this test is about deadlines, not about watches
    // racing a job's last event.
    const job = await waitFor(
      async () => {
        const j = await getJob(client, jobId);
        return j.state === JobState.FAILED ? j : undefined;
      },
      { what: "the job to fail" },
    );
    const events = await history(client, jobId);
    expect(outline(events)).toEqual(["QUEUED(0)", "FAILED(0)"]);
    expect(events.at(-1)?.error).toBe("deadline exceeded");
    expect(job.state).toBe(JobState.FAILED);
    expect(job.failureReason).toBe("deadline exceeded");
    expect(job.startedAt).toBeUndefined();
    expect(generator.calls).toHaveLength(0);
    // BullMQ does not keep it for a retry either.
    const q = weeklyQueue(app);
    await waitFor(async () => (await q.getJobState(jobId)) === "failed", {
      what: "BullMQ to fail the job",
    });
    expect(generator.calls).toHaveLength(0);
  });

  it("fails a running job when its deadline passes, without retrying it", async () => {
    const generator = hanging();
    const { client, app } = await start({ JOB_ATTEMPTS: "5" }, generator);
    const deadline = Date.now() + 600;
    const { jobId } = await client.submitReport({
      userId: "deadline-mid-run",
      reportType: ReportType.WEEKLY,
      deadline: timestampFromMs(deadline),
    });
    const events = await history(client, jobId);
    const job = await getJob(client, jobId);

    expect(outline(events)).toEqual(["QUEUED(0)", "STARTED(1)", "FAILED(1)"]);
    expect(events.at(-1)?.error).toBe("deadline exceeded");
    expect(job.state).toBe(JobState.FAILED);
    expect(job.failureReason).toBe("deadline exceeded");
    expect(job.attemptsMade).toBe(1);
    // The generator was stopped at the deadline (not at its 5 min run timeout).
    expect(generator.aborts).toHaveLength(1);
    expect(ms(job.finishedAt)).toBeGreaterThanOrEqual(deadline - 5);
    expect(ms(job.finishedAt)).toBeLessThan(deadline + 3000);
    // Not retried: BullMQ has failed it for good, and the generator ran once.
    const q = weeklyQueue(app);
    await waitFor(async () => (await q.getJobState(jobId)) === "failed", {
      what: "BullMQ to fail the job",
    });
    expect(generator.calls).toHaveLength(1);
  });

  it("keeps a job with a future run_at QUEUED until then, shows run_at and priority, then runs it", async () => {
    const { client } = await start({});
    const runAt = Date.now() + 1500;
    const { jobId, job: accepted } = await client.submitReport({
      userId: "later",
      reportType: ReportType.WEEKLY,
      runAt: timestampFromMs(runAt),
      priority: JobPriority.HIGH,
    });
    expect(ms(accepted?.runAt)).toBe(runAt);
    expect(accepted?.priority).toBe(JobPriority.HIGH);

    const queued = await getJob(client, jobId);
    expect(queued.state).toBe(JobState.QUEUED);
    expect(ms(queued.runAt)).toBe(runAt);
    expect(queued.priority).toBe(JobPriority.HIGH);
    expect(queued.startedAt).toBeUndefined();
    // Listed the same way.
    const { jobs } = await client.listJobs({ userId: "later" });
    expect(jobs.map((j) => [j.id, j.priority, j.runAt && ms(j.runAt)])).toEqual([
      [jobId, JobPriority.HIGH, runAt],
    ]);
    // An unset priority reads as NORMAL.
    const plain = await client.submitReport({ userId: "plain", reportType: ReportType.WEEKLY });
    expect(plain.job?.priority).toBe(JobPriority.NORMAL);
    expect(plain.job?.runAt).toBeUndefined();

    // Polled throughout: any state other than QUEUED seen before run_at is a failure.
    const seenEarly: string[] = [];
    const done = await waitFor(
      async () => {
        const job = await getJob(client, jobId);
        if (job.state !== JobState.QUEUED && Date.now() < runAt)
          seenEarly.push(JobState[job.state]);
        return job.state === JobState.SUCCEEDED ? job : undefined;
      },
      { timeoutMs: 15_000, what: "the delayed job to succeed" },
    );
    expect(seenEarly).toEqual([]);
    expect(ms(done.startedAt)).toBeGreaterThanOrEqual(runAt);
    expect(ms(done.runAt)).toBe(runAt);
    expect(done.priority).toBe(JobPriority.HIGH);
  });

  it("starts waiting jobs by priority: HIGH, then NORMAL, then LOW", async () => {
    const { promise: gate, resolve: release } = deferred();
    const order: string[] = [];
    const generator: ReportGenerator = {
      async generate(input) {
        order.push(input.userId);
        if (input.userId === "blocker") await gate;
        return csvOutput;
      },
    };
    const { client } = await start({ WORKER_CONCURRENCY: "1", WEEKLY_CONCURRENCY: "1" }, generator);
    const blocker = await client.submitReport({
      userId: "blocker",
      reportType: ReportType.WEEKLY,
    });
    await waitFor(async () => (await getJob(client, blocker.jobId)).state === JobState.RUNNING, {
      what: "the blocker to hold the only slot",
    });

    const ids: Record<string, string> = {};
    for (const [userId, priority] of [
      ["low", JobPriority.LOW],
      ["normal", JobPriority.NORMAL],
      ["high", JobPriority.HIGH],
    ] as const) {
      ids[userId] = (
        await client.submitReport({ userId, reportType: ReportType.WEEKLY, priority })
      ).jobId;
    }
    // Nothing else started while the slot was taken.
    expect(order).toEqual(["blocker"]);
    release();

    const jobs = await waitFor(
      async () => {
        const all = await Promise.all(Object.values(ids).map((id) => getJob(client, id)));
        return all.every((j) => j.state === JobState.SUCCEEDED) ? all : undefined;
      },
      { what: "the three jobs to succeed" },
    );
    expect(order).toEqual(["blocker", "high", "normal", "low"]);
    const startedBy = Object.fromEntries(jobs.map((j) => [j.userId, ms(j.startedAt)]));
    expect(startedBy.high).toBeLessThanOrEqual(startedBy.normal ?? 0);
    expect(startedBy.normal).toBeLessThanOrEqual(startedBy.low ?? 0);
  });
});
