// Telemetry first: the SDK must be registered before the app loads.
import "../helpers/telemetry.js";
import { Code } from "@connectrpc/connect";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { PermanentReportError, TransientReportError } from "../../src/worker/generator.js";
import { type Protocol, reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { codeOf, getJob, history, waitForState } from "../helpers/rpc.js";
import { parentOf, spanExporter, spansOf } from "../helpers/telemetry.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const one = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const found = spans.filter((s) => s.name === name);
  expect(
    found.map((s) => s.name),
    `exactly one span "${name}"`,
  ).toEqual([name]);
  return found[0] as ReadableSpan;
};
const childrenOf = (spans: ReadableSpan[], parent: ReadableSpan) =>
  spans
    .filter((s) => parentOf(s) === parent.spanContext().spanId)
    .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1]);

describe("tracing (in-process, in-memory exporter)", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
    spanExporter.reset();
  });

  /** Weekly generator: attempt 1 fails in fetch-data (transient); attempt 2 succeeds. */
  const flaky = () =>
    scripted(async (input, progress) => {
      await progress(40, "fetch-data");
      if (input.attempt === 1) throw new TransientReportError("downstream hiccup");
      await progress(80, "render");
      return csvOutput;
    });

  it("chains SubmitReport → enqueue → one process span per attempt → phase spans in ONE trace", async () => {
    t = await startTestApp({ RETRY_BACKOFF_MS: "50" }, { generators: { weekly: flaky() } });
    const client = reportClient("connect-json", t.url);
    const { jobId } = await client.submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
      filters: { end_date: "2026-01-31" },
    });
    const events = await history(client, jobId);
    const job = await getJob(client, jobId);
    expect(job.state).toBe(JobState.SUCCEEDED);
    const traceId = job.traceId;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);

    // Both consumer spans end just after the job's last event: wait for them.
    const spans = await waitFor(
      () => {
        const s = spansOf(traceId);
        return s.filter((x) => x.kind === SpanKind.CONSUMER).length === 2 && s;
      },
      { what: "two process spans" },
    );

    const rpc = one(spans, "reports.v1.ReportService/SubmitReport");
    expect(rpc.kind).toBe(SpanKind.SERVER);
    expect(rpc.attributes).toMatchObject({
      "rpc.system": "connect_rpc",
      "rpc.service": "reports.v1.ReportService",
      "rpc.method": "SubmitReport",
      "rpc.grpc.status_code": 0,
      "reports.job.id": jobId,
    });
    expect(rpc.status.code).not.toBe(SpanStatusCode.ERROR);

    const producer = one(spans, "add reports-weekly.weekly");
    expect(producer.kind).toBe(SpanKind.PRODUCER);
    expect(parentOf(producer)).toBe(rpc.spanContext().spanId);
    expect(producer.attributes).toMatchObject({
      "bullmq.queue.name": "reports-weekly",
      "bullmq.queue.operation": "add",
      "bullmq.job.name": "weekly",
      "bullmq.job.id": jobId,
      "messaging.system": "bullmq",
    });

    const attempts = childrenOf(spans, producer).filter((s) => s.kind === SpanKind.CONSUMER);
    expect(attempts.map((s) => s.name)).toEqual([
      "process reports-weekly",
      "process reports-weekly",
    ]);
    const [first, second] = attempts as [ReadableSpan, ReadableSpan];
    expect(first.attributes).toMatchObject({ "bullmq.job.id": jobId, "reports.job.attempt": 1 });
    expect(second.attributes).toMatchObject({ "bullmq.job.id": jobId, "reports.job.attempt": 2 });

    // The failed attempt: exception event and error status, on the attempt and its phase.
    expect(first.status.code).toBe(SpanStatusCode.ERROR);
    expect(first.events.find((e) => e.name === "exception")?.attributes).toMatchObject({
      "exception.message": "downstream hiccup",
    });
    expect(second.status.code).not.toBe(SpanStatusCode.ERROR);

    const phases1 = childrenOf(spans, first).filter((s) => s.name.startsWith("phase "));
    expect(phases1.map((s) => s.name)).toEqual(["phase started", "phase fetch-data"]);
    const failedPhase = phases1[1] as ReadableSpan;
    expect(failedPhase.status.code).toBe(SpanStatusCode.ERROR);
    expect(failedPhase.events.map((e) => e.name)).toContain("exception");
    expect(failedPhase.attributes).toMatchObject({
      "reports.job.phase": "fetch-data",
      "reports.job.attempt": 1,
      "reports.job.id": jobId,
    });

    const phases2 = childrenOf(spans, second).filter((s) => s.name.startsWith("phase "));
    expect(phases2.map((s) => s.name)).toEqual([
      "phase started",
      "phase fetch-data",
      "phase render",
      "phase completed",
    ]);
    for (const p of phases2) expect(p.status.code).not.toBe(SpanStatusCode.ERROR);

    // WatchJob events carry the trace id, so a UI can jump to this trace.
    expect(events.length).toBeGreaterThan(4);
    expect(new Set(events.map((e) => e.traceId))).toEqual(new Set([traceId]));
  });

  it.each([
    ["grpc", "grpc", "grpc"],
    ["grpc-web", "grpc", "grpc_web"],
    ["connect-binary", "connect_rpc", "connect"],
    ["connect-json", "connect_rpc", "connect"],
  ] as const)(
    "names %s calls rpc.system=%s and joins the caller's traceparent",
    async (protocol, system, wire) => {
      t = await startTestApp();
      const client = reportClient(protocol as Protocol, t.url);
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const callerSpan = "00f067aa0ba902b7";
      const code = await codeOf(
        client.getJob(
          { jobId: "no-such-job" },
          { headers: { traceparent: `00-${traceId}-${callerSpan}-01` } },
        ),
      );
      expect(code).toBe(Code.NotFound);
      const rpc = await waitFor(() =>
        spansOf(traceId).find((s) => s.name === "reports.v1.ReportService/GetJob"),
      );
      expect(rpc.kind).toBe(SpanKind.SERVER);
      expect(rpc.attributes).toMatchObject({
        "rpc.system": system,
        "reports.rpc.protocol": wire,
        "rpc.method": "GetJob",
        "rpc.grpc.status_code": Code.NotFound,
      });
      // A caller's mistake is not a server error.
      expect(rpc.status.code).not.toBe(SpanStatusCode.ERROR);
      // The RPC span continues the caller's span (tracing-processes.test.ts
      // shows that no HTTP server span sits between them over HTTP/1.1).
      expect(parentOf(rpc)).toBe(callerSpan);
    },
  );

  it("traces a WatchJob stream until it ends", async () => {
    t = await startTestApp({}, { generators: { weekly: flaky() } });
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await history(client, jobId);
    const watch = await waitFor(() =>
      spanExporter.getFinishedSpans().find((s) => s.name === "reports.v1.ReportService/WatchJob"),
    );
    expect(watch.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.grpc.status_code": 0 });
  });

  it("links a RetryJob'd run to the earlier trace; its events carry the new trace id", async () => {
    let fail = true;
    const generator = scripted(async (_input, progress) => {
      await progress(40, "fetch-data");
      if (fail) throw new PermanentReportError("bad filters");
      return csvOutput;
    });
    t = await startTestApp({}, { generators: { weekly: generator } });
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await waitForState(client, jobId, JobState.FAILED);
    const firstTrace = (await getJob(client, jobId)).traceId;
    expect(firstTrace).toMatch(/^[0-9a-f]{32}$/);

    fail = false;
    const retried = await client.retryJob({ jobId });
    const secondTrace = retried.job?.traceId ?? "";
    expect(secondTrace).toMatch(/^[0-9a-f]{32}$/);
    expect(secondTrace).not.toBe(firstTrace);
    const events = await history(client, jobId);
    expect((await getJob(client, jobId)).state).toBe(JobState.SUCCEEDED);

    const firstProducer = one(spansOf(firstTrace), "add reports-weekly.weekly");
    const spans = await waitFor(() => {
      const s = spansOf(secondTrace);
      return s.some((x) => x.kind === SpanKind.CONSUMER) && s;
    });
    const rpc = one(spans, "reports.v1.ReportService/RetryJob");
    const producer = one(spans, "add reports-weekly.weekly");
    expect(producer.kind).toBe(SpanKind.PRODUCER);
    expect(parentOf(producer)).toBe(rpc.spanContext().spanId);
    expect(producer.links.map((l) => l.context)).toEqual([
      expect.objectContaining({
        traceId: firstTrace,
        spanId: firstProducer.spanContext().spanId,
      }),
    ]);
    const consumer = spans.find((s) => s.kind === SpanKind.CONSUMER);
    expect(parentOf(consumer as ReadableSpan)).toBe(producer.spanContext().spanId);

    // Events before the retry belong to the first run, the rest to the second.
    const retryAt = events.findIndex((e) => e.phase === "retry");
    expect(retryAt).toBeGreaterThan(0);
    expect(new Set(events.slice(0, retryAt).map((e) => e.traceId))).toEqual(new Set([firstTrace]));
    expect(new Set(events.slice(retryAt).map((e) => e.traceId))).toEqual(new Set([secondTrace]));
  });
});
