// Telemetry first: the SDK (and its Prometheus reader) must be registered before the app loads.
import "../helpers/telemetry.js";
import { type Job, Worker } from "bullmq";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import type { JobView } from "../../src/domain/job.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createJobReader } from "../../src/queue/job-reader.js";
import { recordField } from "../../src/queue/job-record.js";
import { queueNameFor } from "../../src/queue/keys.js";
import { createQueueTransitions } from "../../src/queue/queue-transitions.js";
import { createReportQueues } from "../../src/queue/report-queues.js";
import { bullJobSpec } from "../../src/queue/submitter.js";
import { createTransitionApplier } from "../../src/queue/transition-applier.js";
import { createReconciler, maxRecoveries, type Reconciler } from "../../src/worker/reconciler.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { bullQueue, getJob, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** A debug logger that keeps its lines. */
function recordingLogger() {
  const lines: Array<Record<string, unknown> & { msg: string }> = [];
  const logger = pino(
    { level: "debug" },
    { write: (line: string) => lines.push(JSON.parse(line)) },
  );
  return { logger, lines };
}

/** One sample of the Prometheus text: the sum over series with these labels. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

describe("the reconciler", () => {
  const apps: TestApp[] = [];
  const closers: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    for (const app of apps.splice(0)) await app.close();
  });

  /**
   * An API-only app (nothing runs jobs: the test makes BullMQ and the record
   * disagree by hand, with a BullMQ worker that fetches by hand) and a way to
   * build reconcilers over its keys.
   */
  async function setup() {
    const t = await startTestApp({ JOB_ATTEMPTS: "1" }, { mode: "api" });
    apps.push(t);
    const client = reportClient("grpc", t.url);
    const redis = new Redis(t.config.redis.url, { maxRetriesPerRequest: null });
    closers.push(() => redis.disconnect());
    const keys = t.app.keys;
    const log = recordingLogger();
    const transitions = createTransitionApplier({
      redis,
      keys,
      settings: t.config.retention,
      logger: log.logger,
    });
    const jobs = createJobReader({ redis, keys });
    const bull = bullQueue(t.config.redis.prefix, t.config.redis.url);
    closers.push(() => bull.close());
    const fetcher = new Worker(queueNameFor("weekly"), null, {
      connection: redis,
      prefix: keys.bullPrefix,
      autorun: false,
      lockDuration: 60_000,
    });
    closers.push(() => fetcher.close(true));

    /** A reconciler of its own (its own connection), looking at every job whatever its age. */
    const reconciler = (): Reconciler => {
      const connection = new Redis(t.config.redis.url);
      const queues = createReportQueues({ connection, keys, logger: log.logger });
      closers.push(async () => {
        await queues.close();
        connection.disconnect();
      });
      return createReconciler({
        redis: connection,
        keys,
        queues: queues.byType,
        queueTransitions: createQueueTransitions({
          redis: connection,
          queues: queues.byType,
          keys,
          transitions: createTransitionApplier({
            redis: connection,
            keys,
            settings: t.config.retention,
            logger: log.logger,
          }),
        }),
        bullJob: (job) =>
          bullJobSpec(job, { worker: t.config.worker, retention: t.config.retention }),
        intervalMs: 3600_000,
        minAgeMs: 0,
        logger: log.logger,
      });
    };

    const submit = async () => {
      const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      return jobId;
    };
    const load = async (jobId: string): Promise<JobView> => {
      const job = await jobs.get(jobId);
      if (job === undefined) throw new Error(`no job ${jobId}`);
      return job;
    };
    const fetch = async (jobId: string, token: string): Promise<Job> => {
      const job = (await fetcher.getNextJob(token)) as Job | undefined;
      expect(job?.id).toBe(jobId);
      return job as Job;
    };
    const events = async (jobId: string) =>
      (await redis.xrange(keys.events(jobId), "-", "+")).map(([id, f]) => decodeEvent(id, f));
    const repairs = () => log.lines.filter((l) => l.msg === "reconciler repaired job");
    const scrape = async () => (await globalThis.fetch(`${t.metricsUrl}/metrics`)).text();
    return {
      t,
      client,
      redis,
      keys,
      transitions,
      queue: bull.queue,
      reconciler,
      submit,
      load,
      fetch,
      events,
      repairs,
      scrape,
    };
  }

  it("queues again a live job whose BullMQ job is missing, with a metric and a log line, and a worker runs it", async () => {
    const s = await setup();
    const jobId = await s.submit();
    await s.queue.remove(jobId);
    expect(await s.queue.getJob(jobId)).toBeUndefined();
    const labels = { repair: "requeued", cause: "bullmq_job_missing", report_type: "weekly" };
    const before = sample(await s.scrape(), "reports_reconciler_repairs_total", labels);

    expect(await s.reconciler().sweep()).toBe(1);

    const job = await s.load(jobId);
    expect(job).toMatchObject({ state: "queued", phase: "recovered", recoveries: 1 });
    expect((await s.events(jobId)).map((e) => [e.type, e.phase])).toEqual([
      ["queued", ""],
      ["queued", "recovered"],
    ]);
    expect(await s.queue.getJobState(jobId)).toBe("prioritized");
    expect(s.repairs()).toMatchObject([
      { job_id: jobId, repair: "requeued", cause: "bullmq_job_missing", state: "queued" },
    ]);
    expect(sample(await s.scrape(), "reports_reconciler_repairs_total", labels)).toBe(before + 1);
    // Nothing left to repair.
    expect(await s.reconciler().sweep()).toBe(0);

    const worker = await startTestApp(
      { REDIS_PREFIX: s.t.config.redis.prefix, JOB_ATTEMPTS: "1" },
      { mode: "worker", generators: { weekly: scripted(async () => csvOutput) } },
    );
    apps.push(worker);
    const done = await waitForState(s.client, jobId, JobState.SUCCEEDED);
    expect(done.attemptsMade).toBe(1);
  });

  it("records FAILED with BullMQ's reason when BullMQ failed the job and the record never heard", async () => {
    const s = await setup();
    const jobId = await s.submit();
    const fetched = await s.fetch(jobId, "tok-1");
    // The worker died after BullMQ failed the job, before it recorded anything.
    await fetched.moveToFailed(new Error("job stalled more than allowable limit"), "tok-1", false);

    expect(await s.reconciler().sweep()).toBe(1);

    const job = await getJob(s.client, jobId);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.failureReason).toBe(
      "the queue gave up on the job: job stalled more than allowable limit",
    );
    expect(await s.redis.pttl(s.keys.job(jobId))).toBeGreaterThan(0);
    expect(await s.redis.zrange(s.keys.live, 0, -1)).toEqual([]);
    expect(s.repairs()).toMatchObject([{ repair: "failed", cause: "bullmq_job_failed" }]);
  });

  it("queues again a job whose BullMQ job belongs to an earlier run (a RetryJob that BullMQ missed)", async () => {
    const s = await setup();
    const jobId = await s.submit();
    const fetched = await s.fetch(jobId, "tok-1");
    const own = { attempt: 1, token: "attempt-1", lockToken: "tok-1" };
    await s.transitions.apply(await s.load(jobId), "started", {
      ...own,
      at: Date.now(),
      maxAttempts: 1,
    });
    const where = { progress: 5, phase: "started" };
    await s.transitions.apply(await s.load(jobId), "failed", {
      ...own,
      ...where,
      at: Date.now(),
      reason: "x",
    });
    await fetched.moveToFailed(new Error("x"), "tok-1", false);
    // The record is queued again; BullMQ still holds the failed first run (RetryJob's old bug).
    const { createdAt } = await s.load(jobId);
    await waitFor(() => Date.now() > createdAt, { what: "a later millisecond" });
    const requeued = await s.transitions.apply(await s.load(jobId), "requeued", {
      at: Date.now(),
      traceparent: "",
    });
    expect(requeued.applied).toBe(true);
    expect(await s.queue.getJobState(jobId)).toBe("failed");

    expect(await s.reconciler().sweep()).toBe(1);

    expect(s.repairs()).toMatchObject([{ repair: "requeued", cause: "bullmq_job_stale" }]);
    expect(await s.queue.getJobState(jobId)).toBe("prioritized");
    const again = (await s.fetch(jobId, "tok-2")) as Job;
    expect(again.attemptsMade).toBe(0);
  });

  it("queues again a running job whose BullMQ job completed without an outcome, fencing the old attempt off", async () => {
    const s = await setup();
    const jobId = await s.submit();
    const fetched = await s.fetch(jobId, "tok-1");
    const own = { attempt: 1, token: "attempt-1", lockToken: "tok-1" };
    await s.transitions.apply(await s.load(jobId), "started", {
      ...own,
      at: Date.now(),
      maxAttempts: 1,
    });
    await fetched.moveToCompleted(undefined, "tok-1", false);

    expect(await s.reconciler().sweep()).toBe(1);

    expect(s.repairs()).toMatchObject([
      { repair: "requeued", cause: "bullmq_job_completed", state: "running" },
    ]);
    expect((await s.load(jobId)).state).toBe("queued");
    expect(await s.redis.hget(s.keys.job(jobId), recordField.attemptToken)).toBe("");
    // The attempt that was running (somewhere) can no longer write.
    const late = await s.transitions.apply(await s.load(jobId), "failed", {
      ...own,
      progress: 5,
      phase: "started",
      at: Date.now(),
      reason: "late",
    });
    expect(late.applied).toBe(false);
    expect(await s.queue.getJobState(jobId)).toBe("prioritized");
  });

  it(`fails a job it had to queue again ${maxRecoveries} times`, async () => {
    const s = await setup();
    const jobId = await s.submit();
    await s.redis.hset(s.keys.job(jobId), recordField.recoveries, String(maxRecoveries));
    await s.queue.remove(jobId);

    expect(await s.reconciler().sweep()).toBe(1);

    const job = await getJob(s.client, jobId);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.failureReason).toBe(`the queue lost the job ${maxRecoveries} times; given up`);
    expect(s.repairs()).toMatchObject([{ repair: "failed", cause: "bullmq_job_missing" }]);
    expect(await s.queue.getJob(jobId)).toBeUndefined();
  });

  it("drops an index entry whose record is gone or ended", async () => {
    const s = await setup();
    await s.redis.zadd(s.keys.live, 1, "ghost");
    const ended = await s.submit();
    await s.client.cancelJob({ jobId: ended });
    await s.redis.zadd(s.keys.live, 1, ended);
    expect(await s.reconciler().sweep()).toBe(1);
    expect(await s.redis.zrange(s.keys.live, 0, -1)).toEqual([]);
    expect(s.repairs()).toMatchObject([
      { job_id: "ghost", repair: "dropped", cause: "record_missing" },
    ]);
  });

  it("leaves alone live jobs that BullMQ will move on", async () => {
    const s = await setup();
    const waiting = await s.submit();
    const active = await s.submit();
    await s.fetch(waiting, "tok-1"); // the oldest first: now active, locked
    const delayed = (
      await s.client.submitReport({
        userId: "u1",
        reportType: ReportType.WEEKLY,
        runAt: { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 },
      })
    ).jobId;
    const before = await Promise.all(
      [waiting, active, delayed].map((id) => s.redis.hgetall(s.keys.job(id))),
    );
    expect(await s.reconciler().sweep()).toBe(0);
    const after = await Promise.all(
      [waiting, active, delayed].map((id) => s.redis.hgetall(s.keys.job(id))),
    );
    expect(after).toEqual(before);
    expect(s.repairs()).toEqual([]);
  });

  it("repairs a job once when several reconcilers sweep at the same time", async () => {
    const s = await setup();
    const ids = [await s.submit(), await s.submit(), await s.submit()];
    for (const id of ids) await s.queue.remove(id);
    const reconcilers = [s.reconciler(), s.reconciler(), s.reconciler()];

    const counts = await Promise.all(reconcilers.map((r) => r.sweep()));

    expect(counts.reduce((a, b) => a + b, 0)).toBe(3);
    for (const id of ids) {
      const recovered = (await s.events(id)).filter((e) => e.phase === "recovered");
      expect(recovered, id).toHaveLength(1);
      expect((await s.load(id)).recoveries).toBe(1);
      expect(await s.queue.getJobState(id)).toBe("prioritized");
    }
    expect(s.repairs()).toHaveLength(3);
  });

  it("enters live jobs made before the live index existed, once, and repairs them", async () => {
    const s = await setup();
    const lost = await s.submit();
    const fine = await s.submit();
    const ended = await s.submit();
    await s.client.cancelJob({ jobId: ended });
    // As a version without the index left them: not indexed, and never backfilled.
    await s.redis.del(s.keys.live, s.keys.liveBackfilled);
    await s.queue.remove(lost);

    expect(await s.reconciler().sweep()).toBe(1);

    expect(s.repairs()).toMatchObject([{ job_id: lost, cause: "bullmq_job_missing" }]);
    expect((await s.redis.zrange(s.keys.live, 0, -1)).sort()).toEqual([lost, fine].sort());
    expect(await s.redis.exists(s.keys.liveBackfilled)).toBe(1);
    // Once: a job left out of the index now stays out.
    await s.redis.zrem(s.keys.live, fine);
    await s.reconciler().sweep();
    expect(await s.redis.zrange(s.keys.live, 0, -1)).toEqual([lost]);
  });

  it("runs in worker processes every RECONCILE_INTERVAL_MS", async () => {
    const s = await setup();
    const jobId = await s.submit();
    await s.queue.remove(jobId);
    const worker = await startTestApp(
      { REDIS_PREFIX: s.t.config.redis.prefix, JOB_ATTEMPTS: "1", RECONCILE_INTERVAL_MS: "200" },
      { mode: "worker", generators: { weekly: scripted(async () => csvOutput) } },
    );
    apps.push(worker);
    const done = await waitForState(s.client, jobId, JobState.SUCCEEDED);
    expect(done.phase).toBe("completed");
    expect((await s.events(jobId)).map((e) => e.type)).toEqual([
      "queued",
      "queued",
      "started",
      "succeeded",
    ]);
  });
});

describe("the reconciler when Redis stops answering", () => {
  let server: RedisServerHandle | undefined;
  const apps: TestApp[] = [];
  afterEach(async () => {
    server?.resume();
    for (const app of apps.splice(0)) await app.close();
    await server?.stop();
    server = undefined;
  });

  it("logs the failed sweeps and repairs the job once Redis is back, keeping its run_at", async () => {
    server = await startRedisServer();
    const env = { REDIS_URL: server.url, JOB_ATTEMPTS: "1" };
    const api = await startTestApp(env, { mode: "api" });
    apps.push(api);
    const log = recordingLogger();
    const worker = await startTestApp(
      { ...env, REDIS_PREFIX: api.config.redis.prefix, RECONCILE_INTERVAL_MS: "200" },
      {
        mode: "worker",
        logger: log.logger,
        generators: { weekly: scripted(async () => csvOutput) },
      },
    );
    apps.push(worker);
    const client = reportClient("grpc", api.url);
    const bull = bullQueue(api.config.redis.prefix, server.url);
    try {
      // A job queued for far later (so no worker takes it), then lost by BullMQ.
      const { jobId } = await client.submitReport({
        userId: "u1",
        reportType: ReportType.WEEKLY,
        runAt: { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 },
      });
      await bull.queue.remove(jobId);
      server.pause();
      await waitFor(() => log.lines.some((l) => l.msg === "reconciler sweep failed; will retry"), {
        what: "a failed sweep",
      });
      server.resume();
      await waitFor(() => log.lines.some((l) => l.msg === "reconciler repaired job"), {
        what: "the repair",
      });
      expect(log.lines.filter((l) => l.msg === "reconciler repaired job")).toMatchObject([
        { job_id: jobId, cause: "bullmq_job_missing" },
      ]);
      // Queued again, still for its run_at.
      expect((await getJob(client, jobId)).phase).toBe("recovered");
      expect(await bull.queue.getJobState(jobId)).toBe("delayed");
    } finally {
      await bull.close();
    }
  });
});
