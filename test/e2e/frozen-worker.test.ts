import { afterEach, describe, expect, it } from "vitest";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { killAllServices, type LogLine, spawnService } from "../helpers/processes.js";
import { getJob, history, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp, testEnv, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("a worker frozen past its lock", () => {
  let api: TestApp | undefined;
  afterEach(async () => {
    await killAllServices();
    await api?.close();
    api = undefined;
  });

  it("leaves the job its successor finished SUCCEEDED and downloadable, with one terminal event and one published report", async () => {
    const prefix = testPrefix();
    api = await startTestApp({ REDIS_PREFIX: prefix }, { mode: "api" });
    // Short locks so that a stop of a few seconds outlives the lock.
    const workerEnv = testEnv({
      REDIS_PREFIX: prefix,
      ARTIFACT_DIR: api.config.worker.artifactDir,
      REPORT_PHASE_DELAY_MS: "600",
      WORKER_LOCK_DURATION_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "500",
    });
    const a = await spawnService("worker", workerEnv);
    const client = reportClient("connect-json", api.url);
    const { jobId } = await client.submitReport({
      userId: "frozen",
      reportType: ReportType.WEEKLY,
    });
    await history(reportClient("grpc", api.url), jobId, {
      stop: (e) => e.type === JobEventType.PROGRESS,
    });

    a.kill("SIGSTOP");
    await spawnService("worker", workerEnv);
    const done = await waitForEnd(client, jobId, {
      timeoutMs: 20_000,
      what: "the second worker to finish the job",
    });
    expect(JobState[done.state], done.failureReason).toBe("SUCCEEDED");
    const size = Number(done.result?.sizeBytes);
    expect(size).toBeGreaterThan(0);
    await expectDownload(done.result?.downloadUrl, size);

    // A wakes up and runs its attempt to its end.
    a.kill("SIGCONT");
    await waitFor(() => a.logs.some(attemptEnded), {
      timeoutMs: 15_000,
      what: "the frozen worker's attempt to end",
    });

    const after = await getJob(client, jobId);
    expect(JobState[after.state]).toBe("SUCCEEDED");
    expect(after.result).toEqual(done.result);
    await expectDownload(after.result?.downloadUrl, size);
    const events = await history(reportClient("grpc", api.url), jobId);
    const terminal = events.filter(
      (e) =>
        e.type === JobEventType.SUCCEEDED ||
        e.type === JobEventType.FAILED ||
        e.type === JobEventType.CANCELLED,
    );
    expect(terminal.map((e) => JobEventType[e.type])).toEqual(["SUCCEEDED"]);
    // Reports this small are in segments: no file of the job's, and the stale attempt's bytes,
    // in its worker's segment, are named by no record.
    expect(
      await reportFilesOf(
        deploymentArtifactDir(api.config.worker.artifactDir, api.config.redis.prefix),
        jobId,
      ),
    ).toEqual([]);
  }, 60_000);
});

describe("a false stall of 3 s, with the default locks", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await killAllServices();
    await t?.close();
    t = undefined;
  });

  it("SIGSTOP/SIGCONT of the worker running a job: one run, one SUCCEEDED, one published report", async () => {
    const prefix = testPrefix();
    t = await startTestApp({ REDIS_PREFIX: prefix }, { mode: "api" });
    const workerEnv = testEnv({
      REDIS_PREFIX: prefix,
      ARTIFACT_DIR: t.config.worker.artifactDir,
    });
    // A's job runs for 12 s: still running when it is stopped.
    const a = await spawnService("worker", { ...workerEnv, REPORT_PHASE_DELAY_MS: "4000" });
    const client = reportClient("connect-json", t.url);
    const { jobId } = await client.submitReport({
      userId: "paused",
      reportType: ReportType.WEEKLY,
    });
    await history(reportClient("grpc", t.url), jobId, {
      stop: (e) => e.type === JobEventType.STARTED,
    });
    // Another worker is there to take the job over, should A look dead.
    await spawnService("worker", workerEnv);

    expect(JobState[(await getJob(client, jobId)).state]).toBe("RUNNING");
    a.kill("SIGSTOP");
    await faultLasts(3000);
    a.kill("SIGCONT");

    await expectOneCleanRun(t, jobId);
  }, 60_000);

  it("an event loop blocked for 3 s in the worker running a job: one run, one SUCCEEDED, one published report", async () => {
    const blocking = scripted(async (_input, progress) => {
      await progress(30, "fetch-data");
      await othersReady.promise;
      // Blocks the event loop for 3 s: no lock renewal, no timer, no I/O runs.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000);
      await progress(60, "render");
      return csvOutput;
    });
    const othersReady = deferred();
    // The shipped lock settings (not the test apps' short ones).
    t = await startTestApp(
      {},
      { generators: { weekly: blocking }, lockDurationMs: undefined, stalledIntervalMs: undefined },
    );
    expect(t.config.worker.lockDurationMs).toBe(8000);
    const client = reportClient("connect-json", t.url);
    const { jobId } = await client.submitReport({
      userId: "blocked",
      reportType: ReportType.WEEKLY,
    });
    await history(reportClient("grpc", t.url), jobId, {
      stop: (e) => e.type === JobEventType.PROGRESS,
    });
    // Another worker process, checking for stalled jobs every second meanwhile.
    await spawnService(
      "worker",
      testEnv({ REDIS_PREFIX: t.config.redis.prefix, ARTIFACT_DIR: t.config.worker.artifactDir }),
    );
    othersReady.resolve();

    await expectOneCleanRun(t, jobId);
    expect(blocking.calls).toEqual([1]);
  }, 60_000);
});

/**
 * Waits `ms` on purpose: the length of an injected fault (a stopped process),
 * not a wait for a condition.
 */
function faultLasts(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The job ran once and ended SUCCEEDED: one STARTED, one terminal event, one
 * published report (in a segment), downloadable with its recorded size.
 */
async function expectOneCleanRun(t: TestApp, jobId: string) {
  const client = reportClient("connect-json", t.url);
  const job = await waitForEnd(client, jobId, { timeoutMs: 20_000, what: "the job to end" });
  expect(JobState[job.state], job.failureReason).toBe("SUCCEEDED");
  const events = await history(reportClient("grpc", t.url), jobId);
  expect(events.filter((e) => e.type === JobEventType.STARTED)).toHaveLength(1);
  expect(
    events
      .filter((e) =>
        [JobEventType.SUCCEEDED, JobEventType.FAILED, JobEventType.CANCELLED].includes(e.type),
      )
      .map((e) => JobEventType[e.type]),
  ).toEqual(["SUCCEEDED"]);
  // In a segment: no file of the job's.
  expect(
    await reportFilesOf(
      deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix),
      jobId,
    ),
  ).toEqual([]);
  await expectDownload(job.result?.downloadUrl, Number(job.result?.sizeBytes));
}

/** The frozen worker's log line saying its attempt ended without effect. */
function attemptEnded(line: LogLine): boolean {
  return line.msg === "attempt lost its job; it changes nothing";
}

/** Downloads `url` and checks the answer: 200 with `size` bytes. */
async function expectDownload(url: string | undefined, size: number) {
  if (url === undefined) throw new Error("no download URL");
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect((await res.arrayBuffer()).byteLength).toBe(size);
}
