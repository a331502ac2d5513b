import { Code } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { errorOf, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** Text that would mean a Redis or socket error leaked onto the wire. */
const leaked =
  /ECONN|EPIPE|ETIMEDOUT|Connection is closed|Stream isn't writeable|offline queue|max retries|ioredis|redis|127\.0\.0\.1|\bat \S+ \(/i;

describe("Redis restart", () => {
  let redis: RedisServerHandle | undefined;
  let t: TestApp | undefined;
  afterAll(async () => {
    await t?.close();
    await redis?.stop();
  });

  it("answers UNAVAILABLE fast while Redis is down, then keeps every acknowledged job and resumes", async () => {
    redis = await startRedisServer({ appendonly: true });
    t = await startTestApp({ REDIS_URL: redis.url, REPORT_PHASE_DELAY_MS: "100" });
    const client = reportClient("grpc", t.url);
    const stateOf = async (jobId: string) => (await client.getJob({ jobId })).job?.state;
    /** Waits until the job has ended (whichever way) and returns it. */
    const finished = (jobId: string, what: string) =>
      waitForEnd(client, jobId, { timeoutMs: 20_000, intervalMs: 100, what });

    const done = await client.submitReport({ userId: "before", reportType: ReportType.WEEKLY });
    expect((await finished(done.jobId, "the first job to end")).state).toBe(JobState.SUCCEEDED);
    // One job is mid-run when Redis dies; another was acknowledged to its
    // caller an instant before: AOF (fsync always) must still have both.
    const running = await client.submitReport({ userId: "running", reportType: ReportType.WEEKLY });
    await waitFor(async () => (await stateOf(running.jobId)) === JobState.RUNNING, {
      what: "a job to be running",
    });
    const late = await client.submitReport({ userId: "late", reportType: ReportType.MONTHLY });
    await redis.kill("SIGKILL");

    for (const protocol of protocols) {
      const c = reportClient(protocol, t.url);
      // The deadline only keeps a hanging call from hanging the test.
      const opts = { timeoutMs: 8000 };
      const calls = {
        SubmitReport: () => c.submitReport({ userId: "down", reportType: ReportType.WEEKLY }, opts),
        GetJob: () => c.getJob({ jobId: done.jobId }, opts),
      };
      for (const [name, call] of Object.entries(calls)) {
        const began = Date.now();
        const err = await errorOf(call());
        const elapsed = Date.now() - began;
        expect(err, `${name} over ${protocol} should fail`).toBeDefined();
        expect(err?.code, `${name} over ${protocol}: ${err?.message}`).toBe(Code.Unavailable);
        expect(err?.rawMessage).not.toMatch(leaked);
        expect(elapsed, `${name} over ${protocol} settled after ${elapsed} ms`).toBeLessThan(5000);
      }
    }

    await redis.restart();

    // The job finished before the crash is still there, unchanged.
    const doneAgain = await waitFor(async () => (await client.getJob({ jobId: done.jobId })).job, {
      timeoutMs: 15_000,
      what: "GetJob to work again after the restart",
    });
    expect(doneAgain.state).toBe(JobState.SUCCEEDED);

    // The one acknowledged right before the kill survived and gets processed.
    const lateJob = await finished(late.jobId, "the job acknowledged before the kill to end");
    expect(JobState[lateJob.state], lateJob.failureReason).toBe("SUCCEEDED");
    expect(lateJob.userId).toBe("late");
    expect(lateJob.reportType).toBe(ReportType.MONTHLY);

    // The job that was running when Redis died is finished too.
    const runningJob = await finished(running.jobId, "the job running at the crash to end");
    expect(JobState[runningJob.state], runningJob.failureReason).toBe("SUCCEEDED");

    // New work is accepted and the worker picks it up again.
    const after = await client.submitReport({ userId: "after", reportType: ReportType.CUSTOM });
    expect(after.deduplicated).toBe(false);
    const afterJob = await finished(after.jobId, "a job submitted after the restart to end");
    expect(JobState[afterJob.state], afterJob.failureReason).toBe("SUCCEEDED");
  });
});
