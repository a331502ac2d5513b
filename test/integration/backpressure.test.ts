import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { RetryInfoSchema } from "../../gen/reports/v1/errors_pb.js";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { SlowDownError } from "../../src/worker/generator.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { errorOf, getJob, history, ms } from "../helpers/rpc.js";
import { startTestApp, type TestApp, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("backpressure", () => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    // Workers first, so the API's close does not wait on anything they hold.
    for (const app of apps.reverse()) await app.close();
    apps.length = 0;
  });
  async function start(...args: Parameters<typeof startTestApp>): Promise<TestApp> {
    const app = await startTestApp(...args);
    apps.push(app);
    return app;
  }

  it("answers RESOURCE_EXHAUSTED with a retry delay when the backlog is full, and accepts again once it drains", async () => {
    const prefix = testPrefix();
    const api = await start(
      { REDIS_PREFIX: prefix, MAX_BACKLOG: "5", BACKLOG_RETRY_AFTER_MS: "2500" },
      { mode: "api" },
    );
    const client = reportClient("grpc", api.url);
    const accepted: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await client.submitReport({
        userId: "bp",
        reportType: i % 2 === 0 ? ReportType.WEEKLY : ReportType.MONTHLY,
        idempotencyKey: `bp-${i}`,
      });
      expect(res.deduplicated).toBe(false);
      accepted.push(res.jobId);
    }

    // Full, whatever the protocol: the code, the header and the detail agree.
    for (const protocol of protocols) {
      const err = await errorOf(
        reportClient(protocol, api.url).submitReport({
          userId: "bp",
          reportType: ReportType.CUSTOM,
        }),
      );
      expect(err?.code, protocol).toBe(Code.ResourceExhausted);
      expect(err?.rawMessage, protocol).toMatch(/backlog is full/);
      expect(err?.metadata.get("retry-after"), protocol).toBe("3");
      const [info, ...more] = err?.findDetails(RetryInfoSchema) ?? [];
      expect(more, protocol).toHaveLength(0);
      expect(info?.retryDelay, protocol).toBeDefined();
      const delayMs =
        Number(info?.retryDelay?.seconds ?? 0n) * 1000 + (info?.retryDelay?.nanos ?? 0) / 1e6;
      expect(delayMs, protocol).toBe(2500);
    }

    // Plain HTTP: 429 and Retry-After.
    const res = await fetch(`${api.url}/v1/reports`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: "bp", reportType: "weekly" }),
    });
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("3");
    expect(((await res.json()) as { code?: string }).code).toBe("resource_exhausted");

    // A repeat of an accepted submit is still answered while full: it adds nothing.
    const dup = await client.submitReport({
      userId: "bp",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "bp-0",
    });
    expect(dup.deduplicated).toBe(true);
    expect(dup.jobId).toBe(accepted[0]);
    const dupHttp = await fetch(`${api.url}/v1/reports`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "bp-1" },
      body: JSON.stringify({ userId: "bp", reportType: "monthly" }),
    });
    expect(dupHttp.status).toBe(202);
    expect(await dupHttp.json()).toMatchObject({ jobId: accepted[1], deduplicated: true });
    // Rejected submits left no job behind.
    const { jobs } = await client.listJobs({ pageSize: 200 });
    expect(jobs.map((j) => j.id).sort()).toEqual([...accepted].sort());

    // A worker drains the backlog; submits are accepted again.
    await start({ REDIS_PREFIX: prefix }, { mode: "worker" });
    await waitFor(
      async () => {
        const all = await Promise.all(accepted.map((id) => getJob(client, id)));
        return all.every((j) => j.state === JobState.SUCCEEDED);
      },
      { timeoutMs: 15_000, what: "the worker to drain the backlog" },
    );
    const after = await client.submitReport({ userId: "bp", reportType: ReportType.WEEKLY });
    expect(after.job?.state).toBe(JobState.QUEUED);
    await waitFor(async () => (await getJob(client, after.jobId)).state === JobState.SUCCEEDED, {
      what: "the new job to succeed",
    });
  });

  it("starts at most WEEKLY_RATE_MAX weekly jobs per WEEKLY_RATE_DURATION_MS", async () => {
    const app = await start({ WEEKLY_RATE_MAX: "2", WEEKLY_RATE_DURATION_MS: "1000" });
    const client = reportClient("grpc", app.url);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      ids.push(
        (await client.submitReport({ userId: `r${i}`, reportType: ReportType.WEEKLY })).jobId,
      );
    }
    const jobs = await waitFor(
      async () => {
        const all = await Promise.all(ids.map((id) => getJob(client, id)));
        return all.every((j) => j.state === JobState.SUCCEEDED) ? all : undefined;
      },
      { timeoutMs: 20_000, what: "the six weekly jobs to succeed" },
    );
    const starts = jobs.map((j) => ms(j.startedAt)).sort((a, b) => a - b);
    const first = starts[0] ?? 0;
    // Three windows of 1 s: the fifth and sixth start two windows after the first.
    expect((starts[5] ?? 0) - first).toBeGreaterThanOrEqual(1800);
    // No window holds more than two starts.
    for (const [i, s] of starts.entries()) {
      const inWindow = starts.filter((x) => x >= s && x < s + 900).length;
      expect(
        inWindow,
        `starts from #${i}: ${starts.map((x) => x - first).join(",")}`,
      ).toBeLessThanOrEqual(2);
    }
    // Other report types are not limited by the weekly limit.
    const monthly: string[] = [];
    for (let i = 0; i < 4; i++) {
      monthly.push(
        (await client.submitReport({ userId: `m${i}`, reportType: ReportType.MONTHLY })).jobId,
      );
    }
    const done = await waitFor(
      async () => {
        const all = await Promise.all(monthly.map((id) => getJob(client, id)));
        return all.every((j) => j.state === JobState.SUCCEEDED) ? all : undefined;
      },
      { what: "the monthly jobs to succeed" },
    );
    const mStarts = done.map((j) => ms(j.startedAt));
    expect(Math.max(...mStarts) - Math.min(...mStarts)).toBeLessThan(900);
  });

  it("puts a job back in the queue without using an attempt when the generator asks to slow down", async () => {
    let slowDowns = 0;
    const generator = scripted(async () => {
      if (slowDowns === 0) {
        slowDowns++;
        throw new SlowDownError("downstream saturated", 500);
      }
      return csvOutput;
    });
    const app = await start({ JOB_ATTEMPTS: "1" }, { generators: { weekly: generator } });
    const client = reportClient("grpc", app.url);
    const { jobId } = await client.submitReport({ userId: "slow", reportType: ReportType.WEEKLY });
    const events = await history(client, jobId);
    const job = await getJob(client, jobId);

    expect(events.map((e) => `${JobEventType[e.type]}(${e.attempt})`)).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "QUEUED(1)",
      "STARTED(1)",
      "SUCCEEDED(1)",
    ]);
    const throttled = events[2];
    expect(throttled?.phase).toBe("throttled");
    expect(throttled?.state).toBe(JobState.QUEUED);
    expect(throttled?.error).toBe("downstream saturated");
    // The type paused for the requested 500 ms before the job ran again, and
    // not much longer (not BullMQ's 5 s drain delay, say).
    const pausedMs = ms(events[3]?.time) - ms(throttled?.time);
    expect(pausedMs).toBeGreaterThanOrEqual(450);
    expect(pausedMs, `ran again ${pausedMs} ms after the slow-down`).toBeLessThan(2500);
    // With a single attempt allowed, a consumed attempt would have failed the job.
    expect(generator.calls).toEqual([1, 1]);
    expect(job.state).toBe(JobState.SUCCEEDED);
    expect(job.attemptsMade).toBe(1);
    expect(job.maxAttempts).toBe(1);
  });
});
