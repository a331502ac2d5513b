/**
 * Fenced attempts across real processes: a worker frozen past its lock (as a
 * long GC pause, a VM migration or a partition would freeze it) wakes up after
 * another worker finished its job, and changes nothing: the job stays
 * SUCCEEDED, its report downloadable, with one terminal event and one file.
 */
import { readdir } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
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

  it("leaves the job its successor finished SUCCEEDED and downloadable, with one terminal event and one file", async () => {
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
    expect(await filesUnder(path.join(api.config.worker.artifactDir, jobId))).toHaveLength(1);
  });
});

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

/** Every file under `dir` (recursively), as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}
