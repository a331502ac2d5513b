import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { createKeys } from "../../src/queue/keys.js";
import { reportClient } from "../helpers/clients.js";
import { killAllServices, type ServiceProcess, spawnService } from "../helpers/processes.js";
import {
  bullQueue,
  getJob,
  history,
  outlineWithPhases,
  type ReportClient,
} from "../helpers/rpc.js";
import { startTestApp, type TestApp, testEnv, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("SIGTERM to a worker process", () => {
  const apps: TestApp[] = [];
  afterAll(async () => {
    await killAllServices();
    for (const app of apps) await app.close();
  });

  async function setup(
    workerEnv: Record<string, string>,
  ): Promise<{ api: TestApp; client: ReportClient; env: Record<string, string> }> {
    const api = await startTestApp({ REDIS_PREFIX: testPrefix() }, { mode: "api" });
    apps.push(api);
    const env = testEnv({
      REDIS_PREFIX: api.config.redis.prefix,
      ARTIFACT_DIR: api.config.worker.artifactDir,
      ...workerEnv,
    });
    return { api, client: reportClient("grpc", api.url), env };
  }

  /** Submits `n` weekly jobs and waits until every one of them is running in `proc`. */
  async function submitRunning(client: ReportClient, n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      ids.push(
        (await client.submitReport({ userId: `u${i}`, reportType: ReportType.WEEKLY })).jobId,
      );
    }
    await waitFor(
      async () => {
        const jobs = await Promise.all(ids.map((id) => getJob(client, id)));
        return jobs.every((j) => j.state === JobState.RUNNING);
      },
      { timeoutMs: 15_000, what: "every job to be running" },
    );
    return ids;
  }

  it("lets running jobs finish within the grace period and exits 0", async () => {
    const { client, env } = await setup({
      SHUTDOWN_GRACE_MS: "5000",
      REPORT_PHASE_DELAY_MS: "300",
    });
    const proc: ServiceProcess = await spawnService("worker", env);
    const ids = await submitRunning(client, 3);

    proc.kill("SIGTERM");
    const exit = await proc.exited;
    expect(exit, proc.stderr).toEqual({ code: 0, signal: null });
    // Each job finished in the stopping process: SUCCEEDED, nothing failed or released.
    for (const jobId of ids) {
      const job = await getJob(client, jobId);
      expect(job.state, jobId).toBe(JobState.SUCCEEDED);
      expect(job.attemptsMade).toBe(1);
      expect(outlineWithPhases(await history(client, jobId, { timeoutMs: 30_000 }))).toEqual([
        "QUEUED(0)",
        "STARTED(1)",
        "PROGRESS(1)",
        "PROGRESS(1)",
        "SUCCEEDED(1)",
      ]);
    }
    const { jobs: failed } = await client.listJobs({ states: [JobState.FAILED] });
    expect(failed).toEqual([]);
    expect(proc.logs.some((l) => String(l.msg).includes("releasing running jobs"))).toBe(false);
  });

  it("releases jobs still running when the grace period ends, exits 0, and another worker completes them", async () => {
    const graceMs = 200;
    const { client, env } = await setup({
      SHUTDOWN_GRACE_MS: String(graceMs),
      REPORT_PHASE_DELAY_MS: "3000",
    });
    const proc = await spawnService("worker", env);
    const [jobId] = await submitRunning(client, 1);
    if (jobId === undefined) throw new Error("no job");

    const killedAt = Date.now();
    proc.kill("SIGTERM");
    const exit = await proc.exited;
    const tookMs = Date.now() - killedAt;
    expect(exit, proc.stderr).toEqual({ code: 0, signal: null });
    expect(tookMs, `exited after ${tookMs} ms`).toBeLessThan(graceMs + 4000);
    expect(proc.logs.some((l) => String(l.msg).includes("releasing running jobs"))).toBe(true);

    // Back in the queue, not failed, with its attempt given back.
    const released = await getJob(client, jobId);
    expect(released.state).toBe(JobState.QUEUED);
    expect(released.attemptsMade).toBe(0);
    expect(released.failureReason).toBe("");

    await spawnService("worker", { ...env, REPORT_PHASE_DELAY_MS: "20" });
    const job = await waitFor(
      async () => {
        const j = await getJob(client, jobId);
        return j.state === JobState.SUCCEEDED ? j : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: "the second worker to complete the job" },
    );
    expect(job.attemptsMade).toBe(1);
    const events = await history(client, jobId, { timeoutMs: 30_000 });
    expect(outlineWithPhases(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "QUEUED(1,released)",
      "STARTED(1)",
      "PROGRESS(1)",
      "PROGRESS(1)",
      "SUCCEEDED(1)",
    ]);
    expect(events[2]?.state).toBe(JobState.QUEUED);
    expect(events.some((e) => e.type === JobEventType.FAILED)).toBe(false);
  });

  it("releases a job whose STARTED is still held without writing anything: it stays QUEUED as it was", async () => {
    const { api, client, env } = await setup({
      SHUTDOWN_GRACE_MS: "200",
      REPORT_PHASE_DELAY_MS: "3000",
      // STARTED is held far longer than the grace period.
      PROGRESS_LINGER_MS: "60000",
    });
    const bull = bullQueue(api.config.redis.prefix, api.config.redis.url);
    try {
      const proc = await spawnService("worker", env);
      const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      await waitFor(async () => (await bull.queue.getActiveCount()) === 1, {
        timeoutMs: 15_000,
        what: "the worker to fetch the job",
      });
      // Its generator runs; its STARTED is held: the record still says QUEUED.
      expect((await getJob(client, jobId)).state).toBe(JobState.QUEUED);

      proc.kill("SIGTERM");
      expect(await proc.exited, proc.stderr).toEqual({ code: 0, signal: null });
      expect(proc.logs.some((l) => String(l.msg).includes("releasing running jobs"))).toBe(true);
      // Back in BullMQ's queue; the record and the log as they were: nothing was written.
      expect(["waiting", "prioritized"]).toContain(await bull.queue.getJobState(jobId));
      const released = await getJob(client, jobId);
      expect(released.state).toBe(JobState.QUEUED);
      expect(released.attemptsMade).toBe(0);
      const keys = createKeys(api.config.redis.prefix);
      const redis = new Redis(api.config.redis.url);
      expect(await redis.xlen(keys.events(jobId))).toBe(1);
      redis.disconnect();

      await spawnService("worker", {
        ...env,
        REPORT_PHASE_DELAY_MS: "20",
        PROGRESS_LINGER_MS: "10",
      });
      const events = await history(client, jobId, { timeoutMs: 30_000 });
      expect(outlineWithPhases(events)).toEqual([
        "QUEUED(0)",
        "STARTED(1)",
        "PROGRESS(1)",
        "PROGRESS(1)",
        "SUCCEEDED(1)",
      ]);
    } finally {
      await bull.close();
    }
  });
});
