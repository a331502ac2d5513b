import { timestampMs } from "@bufbuild/protobuf/wkt";
import { afterAll, describe, expect, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { killAllServices, spawnService } from "../helpers/processes.js";
import { history, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp, testEnv, testPrefix } from "../helpers/test-app.js";

describe("worker crash (at-least-once processing)", () => {
  let api: TestApp | undefined;
  afterAll(async () => {
    await killAllServices();
    await api?.close();
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

  /** Watches the job from its first event until `stop` holds for one (included) or the job ends. */
  async function watchUntil(jobId: string, stop: (e: JobEvent) => boolean): Promise<JobEvent[]> {
    if (api === undefined) throw new Error("no api");
    return history(reportClient("grpc", api.url), jobId, { timeoutMs: 10_000, stop });
  }
});
