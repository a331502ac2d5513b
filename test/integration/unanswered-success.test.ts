import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { getJob, type ReportClient, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("an attempt whose SUCCEEDED write times out but is applied", () => {
  let t: TestApp | undefined;
  let server: RedisServerHandle | undefined;
  afterEach(async () => {
    server?.resume();
    await t?.close();
    await server?.stop();
    t = server = undefined;
  });

  it("keeps its report: the job is SUCCEEDED and its download answers 200", async () => {
    const redis = await startRedisServer();
    server = redis;
    const frozen = deferred();
    let client: ReportClient | undefined;
    // Freezes Redis as the generator returns: the SUCCEEDED write is the next
    // command sent. progress() resolves once its write is sent, so the
    // generator first waits until Redis has applied it (and so answered it:
    // Redis writes its replies before it answers a later command).
    const weekly = scripted(async (input, progress) => {
      await progress(60, "render");
      await waitFor(
        async () => client !== undefined && (await getJob(client, input.jobId)).progress === 60,
        { what: "the progress write to be applied" },
      );
      redis.pause();
      frozen.resolve();
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    // A lock far longer than the freeze: the attempt keeps its job throughout.
    const app = await startTestApp(
      // A report in a file of its own, whose file this test checks.
      { REDIS_URL: redis.url, REPORT_SEGMENTS: "false" },
      { generators: { weekly }, logger, lockDurationMs: 60_000 },
    );
    t = app;
    client = reportClient("connect-json", app.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await frozen.promise;

    // The write times out (3 s), the attempt takes it for a failure and ends;
    // only then does Redis wake up and run the buffered SUCCEEDED write.
    const dir = deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix);
    await waitFor(
      async () =>
        lines.some((l) => l.msg.includes("unanswered SUCCEEDED write")) ||
        (lines.some((l) => l.msg === "storage unavailable during attempt") &&
          (await reportFilesOf(dir, jobId)).length === 0),
      { timeoutMs: 20_000, what: "the attempt to end while Redis is frozen" },
    );
    redis.resume();

    const job = await waitForEnd(client, jobId, { timeoutMs: 20_000, what: "the job to end" });
    expect(JobState[job.state]).toBe("SUCCEEDED");
    const url = job.result?.downloadUrl;
    if (url === undefined) throw new Error("no download URL");
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(Number(job.result?.sizeBytes));
    expect(await reportFilesOf(dir, jobId)).toHaveLength(1);
  }, 60_000);
});
