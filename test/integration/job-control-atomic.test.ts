/**
 * CancelJob and RetryJob each change the job and BullMQ's job in one step:
 * no acknowledged call leaves a job in a state nothing moves it out of.
 * BullMQ's side is driven here by a real BullMQ Worker that fetches jobs by
 * hand, so a test can hold an attempt where the race happens: after the
 * worker recorded FAILED, before BullMQ moved the job to its failed set.
 */
import { createHash } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { type Job, Worker } from "bullmq";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import type { JobView } from "../../src/domain/job.js";
import { createJobReader } from "../../src/queue/job-reader.js";
import { queueNameFor } from "../../src/queue/keys.js";
import {
  createTransitionApplier,
  type TransitionApplier,
} from "../../src/queue/transition-applier.js";
import { reportClient } from "../helpers/clients.js";
import { openMonitor } from "../helpers/redis-monitor.js";
import { bullQueue, connectErrorOf, getJob, type ReportClient } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("CancelJob and RetryJob as one step with BullMQ", () => {
  let t: TestApp | undefined;
  const closers: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await t?.close();
    t = undefined;
  });

  /**
   * An API-only app (nothing fetches jobs but the test's own worker), a
   * client, the app's transitions and a BullMQ worker that fetches by hand.
   */
  async function setup(env: Record<string, string> = {}) {
    t = await startTestApp({ JOB_ATTEMPTS: "1", ...env }, { mode: "api" });
    const app = t;
    const client = reportClient("grpc", app.url);
    const redis = new Redis(app.config.redis.url, { maxRetriesPerRequest: null });
    closers.push(() => redis.disconnect());
    const transitions = createTransitionApplier({
      redis,
      keys: app.app.keys,
      settings: app.config.retention,
      logger: pino({ level: "silent" }),
    });
    const jobs = createJobReader({ redis, keys: app.app.keys });
    const worker = new Worker(queueNameFor("weekly"), null, {
      connection: redis,
      prefix: app.app.keys.bullPrefix,
      autorun: false,
      lockDuration: 60_000,
    });
    closers.push(() => worker.close(true));
    const bull = bullQueue(app.config.redis.prefix, app.config.redis.url);
    closers.push(() => bull.close());
    return { client, transitions, jobs, worker, queue: bull.queue, redis };
  }

  /** What a worker does for a last attempt that fails: STARTED, then FAILED, BullMQ not told yet. */
  async function failAttempt(
    transitions: TransitionApplier,
    job: JobView,
    token: string,
    lockToken = "tok-1",
  ): Promise<void> {
    // The attempt of the BullMQ fetch that holds the job's lock (submitAndFetch's token).
    const own = { attempt: 1, token, lockToken };
    const started = await transitions.apply(job, "started", {
      ...own,
      at: Date.now(),
      maxAttempts: 1,
    });
    expect(started.applied).toBe(true);
    const failed = await transitions.apply(job, "failed", {
      ...own,
      at: Date.now(),
      progress: 5,
      phase: "started",
      reason: "downstream down",
    });
    expect(failed.applied).toBe(true);
  }

  async function submitAndFetch(client: ReportClient, worker: Worker, token: string) {
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const fetched = (await worker.getNextJob(token)) as Job | undefined;
    expect(fetched?.id).toBe(jobId);
    return { jobId, fetched: fetched as Job };
  }

  it("RetryJob refuses, changing nothing, while the failed attempt still holds BullMQ's job", async () => {
    const { client, transitions, jobs, worker, queue } = await setup();
    const { jobId, fetched } = await submitAndFetch(client, worker, "tok-1");
    const job = await jobs.get(jobId);
    if (job === undefined) throw new Error("no job");
    await failAttempt(transitions, job, "attempt-1");

    // The worker has recorded FAILED and still holds the job's lock.
    const err = await connectErrorOf(client.retryJob({ jobId }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("retry in a moment");
    expect((await getJob(client, jobId)).state).toBe(JobState.FAILED);
    expect(await queue.getJobState(jobId)).toBe("active");

    // BullMQ catches up; now the retry goes through and BullMQ will run the job again.
    await fetched.moveToFailed(new Error("downstream down"), "tok-1", false);
    expect(await queue.getJobState(jobId)).toBe("failed");
    const { job: requeued } = await client.retryJob({ jobId });
    expect(requeued?.state).toBe(JobState.QUEUED);
    expect(await queue.getJobState(jobId)).toBe("prioritized");
    const again = (await worker.getNextJob("tok-2")) as Job | undefined;
    expect(again?.id).toBe(jobId);
    expect(again?.attemptsMade).toBe(0);
  });

  it("RetryJob called while the attempt finishes ends with BullMQ running the job again", async () => {
    const { client, transitions, jobs, worker, queue } = await setup();
    const { jobId, fetched } = await submitAndFetch(client, worker, "tok-1");
    const job = await jobs.get(jobId);
    if (job === undefined) throw new Error("no job");
    await failAttempt(transitions, job, "attempt-1");

    // RetryJob races with BullMQ's move to the failed set.
    const retried = client.retryJob({ jobId });
    await fetched.moveToFailed(new Error("downstream down"), "tok-1", false);
    const { job: requeued } = await retried;
    expect(requeued?.state).toBe(JobState.QUEUED);
    expect((await getJob(client, jobId)).state).toBe(JobState.QUEUED);
    // Whatever the order, BullMQ holds the job waiting to run: nothing is stuck.
    expect(await queue.getJobState(jobId)).toBe("prioritized");
  });

  it("CancelJob of a queued job takes it out of BullMQ in the same step", async () => {
    const { client, queue } = await setup();
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    expect(await queue.getJobState(jobId)).toBe("prioritized");
    const { job } = await client.cancelJob({ jobId });
    expect(job?.state).toBe(JobState.CANCELLED);
    expect(await queue.getJob(jobId)).toBeUndefined();
  });

  it("CancelJob of a job a worker just fetched leaves BullMQ's job to that worker", async () => {
    const { client, worker, queue } = await setup();
    const { jobId, fetched } = await submitAndFetch(client, worker, "tok-1");
    const { job } = await client.cancelJob({ jobId });
    expect(job?.state).toBe(JobState.CANCELLED);
    // Locked by the worker: still there, for the worker to finish (it skips a cancelled job).
    expect(await queue.getJobState(jobId)).toBe("active");
    await fetched.moveToCompleted(undefined, "tok-1", false);
    expect(await queue.getJobState(jobId)).toBe("completed");
    expect((await getJob(client, jobId)).state).toBe(JobState.CANCELLED);
  });

  for (const call of ["cancel", "retry"] as const) {
    it(`${call === "cancel" ? "CancelJob" : "RetryJob"} writes in one script`, async () => {
      const { client, worker, transitions, jobs, redis } = await setup();
      const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      if (call === "retry") {
        const fetched = (await worker.getNextJob("tok-1")) as Job;
        const job = await jobs.get(jobId);
        if (job === undefined) throw new Error("no job");
        await failAttempt(transitions, job, "attempt-1");
        await fetched.moveToFailed(new Error("downstream down"), "tok-1", false);
      }
      const prefix = t?.config.redis.prefix ?? "";
      const commands: string[][] = [];
      const monitor = await openMonitor(t?.config.redis.url ?? "");
      closers.push(() => monitor.disconnect());
      monitor.on("monitor", (_time: string, args: string[], source: string) => {
        if (source === "lua") return;
        if (args.some((a) => String(a).startsWith(`${prefix}:`))) commands.push(args);
      });
      if (call === "cancel") await client.cancelJob({ jobId });
      else await client.retryJob({ jobId });
      const marker = `${prefix}:marker`;
      await redis.get(marker);
      await waitFor(() => commands.some((c) => c.includes(marker)), { what: "the marker" });
      // Reads first (the job record), then one script that changes both
      // sides: EVALSHA, and EVAL of the same script when the server had not
      // cached it yet.
      const writes = commands.filter(
        (c) => !c.includes(marker) && String(c[0]).toLowerCase() !== "hgetall",
      );
      const scripts = writes.map((c) => {
        const name = String(c[0]).toLowerCase();
        if (name === "evalsha") return String(c[1]);
        if (name === "eval") return createHash("sha1").update(String(c[1])).digest("hex");
        return name;
      });
      expect(scripts.length).toBeGreaterThan(0);
      expect(new Set(scripts).size).toBe(1);
      expect(String(writes[0]?.[0]).toLowerCase()).toBe("evalsha");
    });
  }
});
