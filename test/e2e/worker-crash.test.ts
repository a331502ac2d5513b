import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterEach, describe, expect, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { killAllServices, spawnService } from "../helpers/processes.js";
import { getJob, history, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp, testEnv, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("worker crash (at-least-once processing)", () => {
  let api: TestApp | undefined;
  afterEach(async () => {
    await killAllServices();
    await api?.close();
    api = undefined;
  });

  it("finishes a job on another worker after the one running it is killed with SIGKILL", async () => {
    const prefix = testPrefix();
    api = await startTestApp({ REDIS_PREFIX: prefix }, { mode: "api" });
    // Workers share the API's artifact folder, as deployments share a volume.
    // Each phase takes 1 s, so the job is mid-run for seconds; short locks
    // make the dead worker's job stall (and be recovered) within ~3 s.
    const workerEnv = testEnv({
      REDIS_PREFIX: prefix,
      ARTIFACT_DIR: api.config.worker.artifactDir,
      REPORT_PHASE_DELAY_MS: "1000",
      WORKER_LOCK_DURATION_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "500",
    });
    const first = await spawnService("worker", workerEnv);
    const client = reportClient("connect-json", api.url);

    const { jobId } = await client.submitReport({
      userId: "crash-1",
      reportType: ReportType.WEEKLY,
    });
    const untilStarted = await watchUntil(jobId, (e) => e.type === JobEventType.STARTED);
    expect(untilStarted.map((e) => e.type)).toEqual([JobEventType.QUEUED, JobEventType.STARTED]);
    const { job: running } = await client.getJob({ jobId });
    expect(running?.state).toBe(JobState.RUNNING);

    first.kill("SIGKILL");
    const exit = await first.exited;
    expect(exit.signal).toBe("SIGKILL");
    const killedAt = Date.now();

    await spawnService("worker", workerEnv);
    const job = await waitForEnd(client, jobId, {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: "the second worker to finish the job",
    });
    expect(JobState[job.state], job.failureReason).toBe("SUCCEEDED");
    expect(job.progress).toBe(100);
    expect(job.result?.downloadUrl).toMatch(/\/v1\/artifacts\//);

    // One history: the first run's STARTED, then the second worker's STARTED
    // (after the kill) leading to exactly one SUCCEEDED, and nothing failed.
    const all = await watchUntil(jobId, () => false);
    const started = all.filter((e) => e.type === JobEventType.STARTED);
    expect(started).toHaveLength(2);
    const secondStart = started[1]?.time;
    expect(secondStart).toBeDefined();
    if (secondStart) expect(timestampMs(secondStart)).toBeGreaterThanOrEqual(killedAt - 5);
    expect(all.filter((e) => e.type === JobEventType.SUCCEEDED)).toHaveLength(1);
    expect(
      all.some((e) => e.type === JobEventType.FAILED || e.type === JobEventType.RETRYING),
    ).toBe(false);
    expect(all.at(-1)?.type).toBe(JobEventType.SUCCEEDED);

    // The artifact the second worker stored is served.
    const res = await fetch(job.result?.downloadUrl ?? "");
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/\n/);
  });

  it("finishes all ten running jobs of a SIGKILLed worker on a live worker within 15 s, with the default locks", async () => {
    const prefix = testPrefix();
    api = await startTestApp({ REDIS_PREFIX: prefix }, { mode: "api" });
    // The shipped WORKER_LOCK_* and WORKER_STALLED_INTERVAL_MS. The first
    // worker's jobs run for 15 s (they are still running when it dies); the
    // live worker's in about 1.5 s.
    const workerEnv = testEnv({
      REDIS_PREFIX: prefix,
      ARTIFACT_DIR: api.config.worker.artifactDir,
      REPORT_PHASE_DELAY_MS: "500",
    });
    const first = await spawnService("worker", { ...workerEnv, REPORT_PHASE_DELAY_MS: "5000" });
    const client = reportClient("connect-json", api.url);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { jobId } = await client.submitReport({
        userId: `crash-many-${i}`,
        reportType: ReportType.WEEKLY,
      });
      ids.push(jobId);
    }
    await waitFor(
      async () => {
        const jobs = await Promise.all(ids.map((jobId) => getJob(client, jobId)));
        return jobs.every((j) => j.state === JobState.RUNNING);
      },
      { what: "all ten jobs to run on the first worker" },
    );
    // The live worker is up before the crash, idle: every job is the first one's.
    await spawnService("worker", workerEnv);
    const jobs = await Promise.all(ids.map((jobId) => getJob(client, jobId)));
    expect(jobs.map((j) => JobState[j.state])).toEqual(ids.map(() => "RUNNING"));

    first.kill("SIGKILL");
    const killedAt = Date.now();
    await first.exited;
    const finished = await Promise.all(
      ids.map((jobId) =>
        waitForEnd(client, jobId, {
          timeoutMs: 30_000,
          intervalMs: 50,
          what: `job ${jobId} to finish on the live worker`,
        }).then((job) => ({ job, at: Date.now() })),
      ),
    );
    const recoveryMs = Math.max(...finished.map((f) => f.at)) - killedAt;
    for (const { job } of finished)
      expect(JobState[job.state], job.failureReason).toBe("SUCCEEDED");
    let restartMs = 0;
    for (const jobId of ids) {
      const events = await watchUntil(jobId, () => false);
      const started = events.filter((e) => e.type === JobEventType.STARTED);
      expect(started).toHaveLength(2);
      const restartedAt = started[1]?.time;
      if (restartedAt) restartMs = Math.max(restartMs, timestampMs(restartedAt) - killedAt);
      expect(events.filter((e) => e.type === JobEventType.SUCCEEDED)).toHaveLength(1);
      expect(events.at(-1)?.type).toBe(JobEventType.SUCCEEDED);
    }
    console.log(
      `ten jobs of a SIGKILLed worker: all running again after ${restartMs} ms, all finished after ${recoveryMs} ms`,
    );
    expect(recoveryMs).toBeLessThan(15_000);
  }, 60_000);

  /** Watches the job from its first event until `stop` holds for one (included) or the job ends. */
  async function watchUntil(jobId: string, stop: (e: JobEvent) => boolean): Promise<JobEvent[]> {
    if (api === undefined) throw new Error("no api");
    return history(reportClient("grpc", api.url), jobId, { timeoutMs: 10_000, stop });
  }
});
