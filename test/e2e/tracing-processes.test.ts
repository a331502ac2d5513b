import { afterAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import {
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from "../helpers/otlp-receiver.js";
import { killAllServices, spawnService } from "../helpers/processes.js";
import { getJob, history } from "../helpers/rpc.js";
import { testEnv, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;
const CONSUMER = 5;

describe("one trace across the API and worker processes (OTLP http/json)", () => {
  let receiver: OtlpReceiver | undefined;
  let quietReceiver: OtlpReceiver | undefined;
  afterAll(async () => {
    await killAllServices();
    await receiver?.close();
    await quietReceiver?.close();
  });

  it("chains the RPC, the enqueue, the worker's process span and its phases by trace id", async () => {
    receiver = await startOtlpReceiver();
    const env = testEnv({
      REDIS_PREFIX: testPrefix(),
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "100",
      OTEL_METRIC_EXPORT_INTERVAL: "300",
    });
    const api = await spawnService("api", env);
    await spawnService("worker", { ...env, ARTIFACT_DIR: api.env.ARTIFACT_DIR ?? "" });
    // Connect JSON over HTTP/1.1, from a caller with a trace of its own.
    const client = reportClient("connect-json", api.url);
    const callerTrace = "6bf92f3577b34da6a3ce929d0e0e4738";
    const callerSpan = "20f067aa0ba902b7";
    const { jobId } = await client.submitReport(
      { userId: "u1", reportType: ReportType.WEEKLY, filters: { end_date: "2026-01-31" } },
      { headers: { traceparent: `00-${callerTrace}-${callerSpan}-01` } },
    );
    await history(client, jobId);
    const job = await getJob(client, jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    const traceId = job.traceId;
    expect(traceId).toBe(callerTrace);

    const spans = await waitFor(
      () => {
        const s = receiver?.spans.filter((x) => x.traceId === traceId) ?? [];
        return (
          s.some((x) => x.kind === CONSUMER) &&
          s.some((x) => x.name === "phase completed") &&
          // The API exports on its own schedule: its batch may come after the worker's.
          s.some((x) => x.name === "reports.v1.ReportService/SubmitReport") &&
          s
        );
      },
      { what: "the API's and the worker's spans at the receiver", timeoutMs: 15_000 },
    );
    const byName = (name: string) => {
      const found = spans.filter((s) => s.name === name);
      expect(found, `one span "${name}"`).toHaveLength(1);
      return found[0] as ReceivedSpan;
    };

    const rpc = byName("reports.v1.ReportService/SubmitReport");
    expect(rpc).toMatchObject({ service: "report-jobs-api", kind: SERVER });
    expect(rpc.attributes).toMatchObject({
      "rpc.system": "connect_rpc",
      "rpc.method": "SubmitReport",
    });
    // The RPC span is the server span and continues the caller's; the HTTP
    // instrumentation makes none for an RPC path (telemetry.ts rpcPaths).
    expect(rpc.parentSpanId).toBe(callerSpan);
    expect(spans.filter((s) => s.scope === "@opentelemetry/instrumentation-http")).toEqual([]);

    const producer = byName("add reports-weekly.weekly");
    expect(producer).toMatchObject({ service: "report-jobs-api", kind: PRODUCER });
    expect(producer.parentSpanId).toBe(rpc.spanId);
    // The one Redis round trip of the submit, traced by the ioredis instrumentation.
    const redisCalls = spans.filter((s) => s.parentSpanId === producer.spanId && s.kind === CLIENT);
    expect(redisCalls.length).toBeGreaterThan(0);
    expect(
      redisCalls.every(
        (s) => s.attributes["db.system"] === "redis" || s.attributes["db.system.name"] === "redis",
      ),
    ).toBe(true);

    const consumer = byName("process reports-weekly");
    expect(consumer).toMatchObject({ service: "report-jobs-worker", kind: CONSUMER });
    expect(consumer.parentSpanId).toBe(producer.spanId);
    expect(consumer.attributes).toMatchObject({ "bullmq.job.id": jobId, "reports.job.attempt": 1 });

    const phases = spans
      .filter((s) => s.parentSpanId === consumer.spanId && s.name.startsWith("phase "))
      .map((s) => s.name);
    expect(phases).toEqual([
      "phase started",
      "phase fetch-data",
      "phase render",
      "phase completed",
    ]);
    for (const s of spans.filter((x) => x.name.startsWith("phase "))) {
      expect(s.service).toBe("report-jobs-worker");
    }

    // Metrics go over OTLP too when an endpoint is set.
    await waitFor(() => receiver?.metricNames.has("reports.job.duration"), {
      what: "reports.job.duration over OTLP",
    });

    // A signed download link is a credential: its signature stays out of the HTTP span.
    const link = new URL(job.result?.downloadUrl ?? "");
    const signature = link.searchParams.get("signature") ?? "";
    expect(signature).not.toBe("");
    expect((await fetch(link)).status).toBe(200);
    const download = await waitFor(
      () => receiver?.spans.find((s) => s.attributes["url.path"] === link.pathname),
      { what: "the download's HTTP server span" },
    );
    expect(download.attributes["url.query"]).toMatch(/(^|&)signature=REDACTED(&|$)/);
    expect(JSON.stringify(download)).not.toContain(signature);
  });

  it("without an exporter records no spans, yet trace ids still reach jobs, events and logs", async () => {
    quietReceiver = await startOtlpReceiver();
    const otlp = quietReceiver;
    // The API exports nothing (no OTLP endpoint): its spans are not recorded,
    // and the job it enqueues is unsampled, so the worker, which could export,
    // records nothing of this trace either.
    const env = testEnv({ REDIS_PREFIX: testPrefix() });
    const api = await spawnService("api", env);
    const worker = await spawnService("worker", {
      ...env,
      ARTIFACT_DIR: api.env.ARTIFACT_DIR ?? "",
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "100",
      OTEL_METRIC_EXPORT_INTERVAL: "300",
    });
    const traceId = "5af92f3577b34da6a3ce929d0e0e4737";
    const client = reportClient("connect-json", api.url);
    const { jobId } = await client.submitReport(
      { userId: "u1", reportType: ReportType.WEEKLY, filters: { end_date: "2026-01-31" } },
      { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
    );
    const events = await history(client, jobId);
    const job = await getJob(client, jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    // The caller's trace continues in the job, its events and both processes' logs.
    expect(job.traceId).toBe(traceId);
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e) => e.traceId === traceId)).toBe(true);
    const rpcLine = await waitFor(
      () => api.logs.find((l) => l.msg === "rpc" && l.job_id === jobId),
      { what: "the SubmitReport log line" },
    );
    expect(rpcLine.trace_id).toBe(traceId);
    const workers = await waitFor(
      () => {
        const lines = worker.logs.filter((l) => l.job_id === jobId && l.msg === "job succeeded");
        return otlp.metricNames.has("reports.job.duration") && lines.length > 0 && lines;
      },
      { what: "the worker's job lines and its metrics over OTLP", timeoutMs: 15_000 },
    );
    expect(workers.some((l) => l.trace_id === traceId)).toBe(true);
    // The worker's metrics arrived (it exports), after its spans would have.
    expect(otlp.spans.filter((x) => x.traceId === traceId)).toEqual([]);
  });

  it("a worker that records nothing keeps each attempt's trace and span ids in its job lines", async () => {
    // Neither process exports: the worker keeps its contexts without
    // AsyncLocalStorage (sync-context-manager.ts) and enters an attempt's
    // context where it logs for it (job-traces.ts).
    const env = testEnv({ REDIS_PREFIX: testPrefix() });
    const api = await spawnService("api", env);
    const worker = await spawnService("worker", {
      ...env,
      ARTIFACT_DIR: api.env.ARTIFACT_DIR ?? "",
    });
    const traceId = "7af92f3577b34da6a3ce929d0e0e4739";
    const client = reportClient("connect-json", api.url);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { jobId } = await client.submitReport(
        { userId: "u1", reportType: ReportType.WEEKLY, filters: { end_date: "2026-01-31" } },
        { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
      );
      ids.push(jobId);
    }
    for (const jobId of ids) {
      await history(client, jobId);
      expect((await getJob(client, jobId)).state).toBe(JobState.SUCCEEDED);
    }
    const spanIds = new Set<string>();
    for (const jobId of ids) {
      const lines = await waitFor(
        () => {
          const l = worker.logs.filter(
            (x) => x.job_id === jobId && String(x.msg).startsWith("job "),
          );
          return l.some((x) => x.msg === "job succeeded") && l;
        },
        { what: "the worker's job lines" },
      );
      expect(lines.map((l) => l.msg)).toEqual(["job running", "job succeeded"]);
      // BullMQ's consumer span of the attempt: one per job, in the caller's trace.
      for (const l of lines) {
        expect(l.trace_id).toBe(traceId);
        expect(l.span_id).toMatch(/^[0-9a-f]{16}$/);
        expect(l.span_id).toBe(lines[0]?.span_id);
      }
      spanIds.add(String(lines[0]?.span_id));
    }
    expect(spanIds.size).toBe(ids.length);
    // Lines outside an attempt carry no trace.
    expect(worker.logs.find((l) => l.msg === "worker started")?.trace_id).toBeUndefined();
  });
});
