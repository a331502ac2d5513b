import { afterEach, describe, expect, it } from "vitest";
import {
  type Job,
  type JobEvent,
  JobEventType,
  JobState,
  ReportType,
} from "../../gen/reports/v1/job_pb.js";
import {
  PermanentReportError,
  type ReportGenerator,
  type ReportOutput,
  TransientReportError,
} from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { getJob, history, ms, outline } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

describe("report worker retries", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  /** Starts an app whose weekly generator is `generator`; submits one weekly job and follows it to its end. */
  async function runJob(
    generator: ReportGenerator,
    env: Record<string, string> = {},
  ): Promise<{ job: Job; events: JobEvent[] }> {
    t = await startTestApp(
      { RETRY_BACKOFF_MS: "100", ...env },
      { generators: { weekly: generator } },
    );
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const events = await history(client, jobId);
    const job = await getJob(client, jobId);
    return { job, events };
  }

  it("retries a generator failing twice, then succeeds on attempt 3 with growing backoff", async () => {
    const generator = scripted(async (input, progress) => {
      if (input.attempt < 3) throw new TransientReportError(`downstream hiccup ${input.attempt}`);
      await progress(80, "render");
      return csvOutput;
    });
    const { job, events } = await runJob(generator);

    expect(generator.calls).toEqual([1, 2, 3]);
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(job.attemptsMade).toBe(3);
    expect(job.maxAttempts).toBe(5);
    expect(job.failureReason).toBe("");
    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "RETRYING(2)",
      "STARTED(3)",
      "PROGRESS(3)",
      "SUCCEEDED(3)",
    ]);

    const retrying = events.filter((e) => e.type === JobEventType.RETRYING);
    const started = events.filter((e) => e.type === JobEventType.STARTED);
    for (const [i, r] of retrying.entries()) {
      expect(r.state).toBe(JobState.RETRYING);
      expect(r.error).toBe(`downstream hiccup ${i + 1}`);
      // The next attempt does not start before the announced time.
      const nextStart = started[i + 1];
      expect(nextStart).toBeDefined();
      expect(ms(nextStart?.time)).toBeGreaterThanOrEqual(ms(r.nextAttemptAt) - 5);
    }
    // RETRY_BACKOFF_MS=100, exponential with jitter in [0.5, 1]:
    // attempt 1 waits 50-100 ms, attempt 2 100-200 ms.
    const delays = retrying.map((r) => ms(r.nextAttemptAt) - ms(r.time));
    expect(delays[0]).toBeGreaterThanOrEqual(50);
    expect(delays[0]).toBeLessThanOrEqual(100);
    expect(delays[1]).toBeGreaterThanOrEqual(100);
    expect(delays[1]).toBeLessThanOrEqual(200);
    expect(delays[1]).toBeGreaterThanOrEqual(delays[0] ?? Number.POSITIVE_INFINITY);

    const last = events.at(-1);
    expect(last?.state).toBe(JobState.SUCCEEDED);
    expect(last?.result?.downloadUrl).toMatch(/\/v1\/artifacts\//);
  });

  it("dead-letters a job whose generator always fails transiently after 5 attempts", async () => {
    const generator = scripted(async () => {
      throw new TransientReportError("downstream down");
    });
    const { job, events } = await runJob(generator);

    expect(generator.calls).toEqual([1, 2, 3, 4, 5]);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.attemptsMade).toBe(5);
    expect(job.failureReason).toContain("downstream down");
    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "RETRYING(2)",
      "STARTED(3)",
      "RETRYING(3)",
      "STARTED(4)",
      "RETRYING(4)",
      "STARTED(5)",
      "FAILED(5)",
    ]);
    const failed = events.at(-1);
    expect(failed?.state).toBe(JobState.FAILED);
    expect(failed?.error).toContain("downstream down");
    expect(failed?.nextAttemptAt).toBeUndefined();
  });

  it("fails a permanent error after one attempt, without retrying", async () => {
    const generator = scripted(async () => {
      throw new PermanentReportError("filters.region is not a region we know");
    });
    const { job, events } = await runJob(generator);

    expect(generator.calls).toEqual([1]);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.attemptsMade).toBe(1);
    expect(job.failureReason).toBe("filters.region is not a region we know");
    expect(outline(events)).toEqual(["QUEUED(0)", "STARTED(1)", "FAILED(1)"]);
    expect(events.at(-1)?.error).toBe("filters.region is not a region we know");
  });

  it("shows an unexpected generator error as an internal error in its phase, never its text", async () => {
    const secret = "connect ECONNREFUSED 10.1.2.3:5432 password=hunter2";
    const generator = scripted(async (_input, progress) => {
      await progress(40, "fetch-data");
      throw new Error(secret);
    });
    const { job, events } = await runJob(generator, { WEEKLY_ATTEMPTS: "2" });

    expect(generator.calls).toEqual([1, 2]);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.attemptsMade).toBe(2);
    expect(job.failureReason).toBe("internal error in phase fetch-data");
    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "PROGRESS(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "PROGRESS(2)",
      "FAILED(2)",
    ]);
    for (const e of events.filter((e) => e.error !== "")) {
      expect(e.error).toBe("internal error in phase fetch-data");
    }
    expect(
      JSON.stringify({ job, events }, (_k, v) => (typeof v === "bigint" ? String(v) : v)),
    ).not.toMatch(/ECONNREFUSED|hunter2|5432/);
  });

  it("aborts an attempt that runs past the report type's timeout and retries it", async () => {
    const seen: { aborted: boolean; reason: unknown }[] = [];
    const generator = scripted(async (input, _progress, signal) => {
      if (input.attempt > 1) return csvOutput;
      // Hangs until the worker aborts it.
      return new Promise<ReportOutput>((_resolve, reject) => {
        signal.addEventListener(
          "abort",
          () => {
            seen.push({ aborted: signal.aborted, reason: signal.reason });
            reject(signal.reason);
          },
          { once: true },
        );
      });
    });
    const { job, events } = await runJob(generator, { WEEKLY_TIMEOUT_MS: "300" });

    expect(generator.calls).toEqual([1, 2]);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ aborted: true, reason: { name: "TimeoutError" } });
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(job.attemptsMade).toBe(2);
    expect(outline(events)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "RETRYING(1)",
      "STARTED(2)",
      "SUCCEEDED(2)",
    ]);
    const [started, retrying] = events.filter(
      (e) => e.type === JobEventType.STARTED || e.type === JobEventType.RETRYING,
    );
    expect(retrying?.error).toMatch(/timed out after 300 ms/);
    expect(ms(retrying?.time) - ms(started?.time)).toBeGreaterThanOrEqual(290);
  });
});
