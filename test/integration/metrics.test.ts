// Telemetry first: the SDK (and its Prometheus reader) must be registered before the app loads.
import "../helpers/telemetry.js";
import { Redis } from "ioredis";
import { afterEach, describe, expect, inject, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { PermanentReportError } from "../../src/worker/generator.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { sample } from "../helpers/prometheus.js";
import { history, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("metrics on METRICS_PORT", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });
  const scrape = async () => {
    const res = await fetch(`${t?.metricsUrl}/metrics`);
    expect(res.status).toBe(200);
    return res.text();
  };

  it("shows the latency histogram and outcome counters by report type, moving as jobs run", async () => {
    const weekly = scripted(async () => csvOutput);
    const custom = scripted(async () => {
      throw new PermanentReportError("bad filters");
    });
    t = await startTestApp({}, { generators: { weekly, custom } });
    const client = reportClient("grpc", t.url);
    const run = async (reportType: ReportType, key?: string) => {
      const { jobId } = await client.submitReport(
        { userId: "u1", reportType, filters: { secret_filter: "do-not-leak" } },
        key ? { headers: { "idempotency-key": key } } : {},
      );
      await history(client, jobId);
      return jobId;
    };
    await run(ReportType.WEEKLY, "k1");
    await run(ReportType.WEEKLY, "k1"); // same key: the same job, an idempotent hit
    await run(ReportType.WEEKLY);
    await run(ReportType.CUSTOM);

    const succeeded = { report_type: "weekly", outcome: "succeeded" };
    const failed = { report_type: "custom", outcome: "failed" };
    let text = await waitFor(async () => {
      const s = await scrape();
      return sample(s, "reports_job_duration_count", succeeded) === 2 && s;
    });
    expect(sample(text, "reports_job_duration_bucket", { ...succeeded, le: "+Inf" })).toBe(2);
    expect(sample(text, "reports_job_duration_bucket", { ...succeeded, le: "60" })).toBe(2);
    expect(sample(text, "reports_job_duration_sum", succeeded)).toBeGreaterThan(0);
    expect(sample(text, "reports_job_outcomes_total", succeeded)).toBe(2);
    expect(sample(text, "reports_job_outcomes_total", failed)).toBe(1);
    expect(sample(text, "reports_job_duration_count", failed)).toBe(1);
    expect(
      sample(text, "reports_job_attempts_total", { report_type: "custom", outcome: "failed" }),
    ).toBe(1);
    expect(
      sample(text, "reports_submit_duration_count", { report_type: "weekly", outcome: "accepted" }),
    ).toBe(2);
    expect(
      sample(text, "reports_submit_duration_bucket", {
        report_type: "weekly",
        outcome: "accepted",
        le: "1",
      }),
    ).toBe(2);
    expect(sample(text, "reports_submit_idempotent_hits_total", { report_type: "weekly" })).toBe(1);
    // Labels are low-cardinality: no job ids, tenants or filters.
    expect(text).not.toContain("do-not-leak");

    // Values move as more jobs run.
    await run(ReportType.WEEKLY);
    await run(ReportType.WEEKLY, "k1");
    text = await waitFor(async () => {
      const s = await scrape();
      return sample(s, "reports_job_duration_count", succeeded) === 3 && s;
    });
    expect(sample(text, "reports_job_outcomes_total", succeeded)).toBe(3);
    expect(sample(text, "reports_submit_idempotent_hits_total", { report_type: "weekly" })).toBe(2);
  });

  it("records rpc.server.call.duration for RPCs on every protocol, by method and status code", async () => {
    t = await startTestApp();
    const calls = [
      ["grpc", "grpc"],
      ["connect-json", "connect_rpc"],
      ["grpc-web", "grpc"],
    ] as const;
    // Metrics are cumulative for the whole test process: compare with before.
    const before = await scrape();
    const count = (text: string, system: string, method: string, code: string) =>
      sample(text, "rpc_server_call_duration_count", {
        rpc_system: system,
        rpc_service: "reports.v1.ReportService",
        rpc_method: method,
        rpc_grpc_status_code: code,
      }) ?? 0;
    for (const [protocol] of calls) {
      const client = reportClient(protocol, t.url);
      await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      await client.getJob({ jobId: "no-such-job" }).catch(() => undefined);
    }
    const text = await scrape();
    // gRPC and gRPC-Web share rpc.system "grpc".
    expect(
      count(text, "grpc", "SubmitReport", "0") - count(before, "grpc", "SubmitReport", "0"),
    ).toBe(2);
    expect(
      count(text, "connect_rpc", "SubmitReport", "0") -
        count(before, "connect_rpc", "SubmitReport", "0"),
    ).toBe(1);
    // NOT_FOUND is 5.
    expect(count(text, "grpc", "GetJob", "5") - count(before, "grpc", "GetJob", "5")).toBe(2);
    expect(
      count(text, "connect_rpc", "GetJob", "5") - count(before, "connect_rpc", "GetJob", "5"),
    ).toBe(1);
    // gRPC WatchJob, served on the raw HTTP/2 stream without the interceptors, is measured too.
    const watcher = reportClient("grpc", t.url);
    const { jobId } = await watcher.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const watchCount = (s: string) => count(s, "grpc", "WatchJob", "0");
    const watches0 = watchCount(await scrape());
    await history(watcher, jobId);
    // Recorded once the trailers are out, which the client may see first.
    await waitFor(async () => watchCount(await scrape()) - watches0 === 1, {
      what: "the WatchJob's duration recorded",
    });
    expect(
      sample(text, "rpc_server_call_duration_bucket", {
        rpc_system: "connect_rpc",
        rpc_method: "SubmitReport",
        le: "+Inf",
      }),
    ).toBeGreaterThanOrEqual(1);
  });

  it("measures a RetryJob'd run from its re-queue, not from the job's creation", async () => {
    let fail = true;
    const weekly = scripted(async () => {
      if (fail) throw new PermanentReportError("bad filters");
      return csvOutput;
    });
    t = await startTestApp({}, { generators: { weekly } });
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.FAILED);
    // The job was created two hours ago, as far as its record says.
    const redis = new Redis(inject("redisUrl"));
    try {
      await redis.hset(t.app.keys.job(jobId), "created", String(Date.now() - 2 * 3600_000));
    } finally {
      redis.disconnect();
    }
    // Metrics are cumulative for the whole test process: compare with before.
    const succeeded = { report_type: "weekly", outcome: "succeeded" };
    const before = await scrape();
    const count0 = sample(before, "reports_job_duration_count", succeeded) ?? 0;
    const fast0 = sample(before, "reports_job_duration_bucket", { ...succeeded, le: "60" }) ?? 0;
    fail = false;
    await client.retryJob({ jobId });
    await waitForState(client, jobId, JobState.SUCCEEDED);
    const text = await waitFor(async () => {
      const s = await scrape();
      return sample(s, "reports_job_duration_count", succeeded) === count0 + 1 && s;
    });
    expect(sample(text, "reports_job_duration_bucket", { ...succeeded, le: "60" })).toBe(fast0 + 1);
  });

  it("shows queue depth by state and active watchers, both moving", async () => {
    const gate = deferred();
    const started = deferred();
    const monthly = scripted(async () => {
      started.resolve();
      await gate.promise;
      return csvOutput;
    });
    t = await startTestApp({ MONTHLY_CONCURRENCY: "1" }, { generators: { monthly } });
    const client = reportClient("grpc", t.url);
    const submit = async () =>
      (await client.submitReport({ userId: "u1", reportType: ReportType.MONTHLY })).jobId;
    const first = await submit();
    await started.promise;
    const second = await submit();
    const third = await submit();
    const depth = (s: string, state: string) =>
      sample(s, "reports_queue_depth", { report_type: "monthly", state });
    await waitFor(
      async () => {
        const s = await scrape();
        // Our jobs all have a priority, so waiting ones are in BullMQ's "prioritized" set.
        return depth(s, "active") === 1 && depth(s, "prioritized") === 2;
      },
      { what: "1 active and 2 waiting monthly jobs" },
    );

    // Two open watches.
    const watching = new AbortController();
    const watches = [first, second].map((jobId) =>
      (async () => {
        try {
          for await (const _ of client.watchJob({ jobId }, { signal: watching.signal })) {
            // read until aborted
          }
        } catch {
          // aborted
        }
      })(),
    );
    await waitFor(async () => sample(await scrape(), "reports_watchers_active") === 2, {
      what: "2 watchers",
    });
    watching.abort();
    await Promise.all(watches);
    await waitFor(async () => sample(await scrape(), "reports_watchers_active") === 0, {
      what: "0 watchers",
    });

    gate.resolve();
    for (const id of [first, second, third]) await waitForState(client, id, JobState.SUCCEEDED);
    await waitFor(
      async () => {
        const s = await scrape();
        return depth(s, "active") === 0 && depth(s, "prioritized") === 0;
      },
      { what: "an empty monthly queue" },
    );
  });

  it("answers the worker's probes on the same port: /healthz, and /readyz while its workers run", async () => {
    t = await startTestApp({}, { mode: "worker" });
    expect((await fetch(`${t.metricsUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${t.metricsUrl}/readyz`)).status).toBe(200);
    expect((await fetch(`${t.metricsUrl}/nope`)).status).toBe(404);
    // A stopped BullMQ worker is not ready to take jobs.
    await t.app.worker?.workers.weekly.close();
    expect((await fetch(`${t.metricsUrl}/readyz`)).status).toBe(503);
  });

  it("says which variable to change when METRICS_PORT is taken", async () => {
    t = await startTestApp();
    const port = new URL(t.metricsUrl).port;
    const err = await startTestApp({ METRICS_PORT: port }, { mode: "api" }).then(
      async (second) => {
        await second.close();
        return undefined;
      },
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(new RegExp(`METRICS_PORT ${port} .*already in use`));
  });
});
