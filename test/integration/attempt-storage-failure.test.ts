/**
 * An attempt that cannot record its own failure (Redis went away mid-attempt)
 * is failed by BullMQ once Redis is back, and BullMQ's failure message
 * becomes the job's failure reason, which callers read. Found by `npm run
 * chaos`: that reason was ioredis' own text ("Stream isn't writeable and
 * enableOfflineQueue options is false"); callers must get a sentence.
 */
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { AttemptStorageError } from "../../src/worker/processor.js";
import { attemptStorageReason } from "../../src/worker/report-worker.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { getJob, history, type ReportClient, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("an attempt whose failure cannot be recorded while Redis is down", () => {
  let t: TestApp | undefined;
  let server: RedisServerHandle | undefined;
  afterEach(async () => {
    await t?.close();
    await server?.stop();
    t = server = undefined;
  });

  it("ends FAILED with a failure reason for people, not the Redis driver's error text", async () => {
    const redis = await startRedisServer({ appendonly: true });
    server = redis;
    const killed = deferred();
    // Kills Redis mid-attempt: the next progress write, and the failure write after it, fail.
    let signal: AbortSignal | undefined;
    let sent: unknown;
    let client: ReportClient | undefined;
    const weekly = scripted(async (input, progress, s) => {
      signal = s;
      await progress(30, "fetch-data");
      // progress() resolves once its write is sent: kill Redis once it was applied.
      await waitFor(
        async () => client !== undefined && (await getJob(client, input.jobId)).progress === 30,
        { what: "the first progress write to be applied" },
      );
      await redis.kill();
      killed.resolve();
      // Resolves once sent: the failure comes back through the signal, and
      // ends the attempt whatever the generator returns.
      sent = await progress(60, "render").then(
        () => "sent",
        (err: unknown) => err,
      );
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    const app = await startTestApp(
      { REDIS_URL: redis.url, WEEKLY_ATTEMPTS: "1" },
      { generators: { weekly }, logger, lockDurationMs: 30_000 },
    );
    t = app;
    client = reportClient("connect-json", app.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await killed.promise;
    await waitFor(() => lines.some((l) => l.msg === "storage unavailable during attempt"), {
      timeoutMs: 10_000,
      what: "the attempt to fail on the missing Redis",
    });
    expect(sent).toBe("sent");
    expect(signal?.reason).toBeInstanceOf(AttemptStorageError);
    await redis.restart();

    const job = await waitForEnd(client, jobId, { timeoutMs: 20_000, what: "the job to end" });
    expect(JobState[job.state]).toBe("FAILED");
    expect(job.failureReason).toBe(attemptStorageReason);
    const events = await history(reportClient("grpc", app.url), jobId);
    expect(events.at(-1)?.error).toBe(attemptStorageReason);
  }, 60_000);
});
