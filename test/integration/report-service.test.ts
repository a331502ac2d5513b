/**
 * ReportService end to end over every protocol the server speaks (Connect
 * JSON, Connect binary, gRPC, gRPC-Web through connect-node transports):
 * submit, idempotency, GetJob, WatchJob and the artifact download.
 */
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import type { WatchJobResponse } from "../../gen/reports/v1/report_service_pb.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { connectErrorOf } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** Collects every message of a stream until it ends (or the call fails). */
async function collect(stream: AsyncIterable<WatchJobResponse>): Promise<WatchJobResponse[]> {
  const out: WatchJobResponse[] = [];
  for await (const message of stream) out.push(message);
  return out;
}

/** A watch that does not end fails with DEADLINE_EXCEEDED instead of hanging the test. */
const watchOptions = { timeoutMs: 10_000 };

const filters = { region: "eu", end_date: "2026-01-31", tags: ["a", "b"], limit: 10 };

describe("createReportService()", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  /** Waits until GetJob says the job is SUCCEEDED. */
  const waitSucceeded = (protocol: (typeof protocols)[number], jobId: string) => {
    const client = reportClient(protocol, t.url);
    return waitFor(
      async () => {
        const { job } = await client.getJob({ jobId });
        if (job?.state === JobState.FAILED) throw new Error(`job failed: ${job.failureReason}`);
        return job?.state === JobState.SUCCEEDED ? job : undefined;
      },
      { timeoutMs: 15_000, what: `job ${jobId} to succeed` },
    );
  };

  for (const protocol of protocols) {
    describe(`over ${protocol}`, () => {
      it("accepts a report and echoes it as a QUEUED job with an absolute status URL", async () => {
        const client = reportClient(protocol, t.url);
        const res = await client.submitReport({
          userId: "user-echo",
          reportType: ReportType.MONTHLY,
          filters,
        });
        expect(res.jobId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
        expect(res.deduplicated).toBe(false);
        const status = new URL(res.statusUrl);
        expect(status.origin).toBe(new URL(t.url).origin);
        expect(status.pathname).toBe(`/v1/jobs/${res.jobId}`);
        const job = res.job as Job;
        expect(job).toBeDefined();
        expect(job.id).toBe(res.jobId);
        expect(job.userId).toBe("user-echo");
        expect(job.reportType).toBe(ReportType.MONTHLY);
        expect(job.filters).toEqual(filters);
        expect(job.state).toBe(JobState.QUEUED);
        expect(job.progress).toBe(0);
        expect(job.attemptsMade).toBe(0);
        expect(job.result).toBeUndefined();
        expect(job.createdAt).toBeDefined();
        expect(job.finishedAt).toBeUndefined();
      });

      it("deduplicates a repeat with the same idempotency key", async () => {
        const client = reportClient(protocol, t.url);
        const request = {
          idempotencyKey: `key-${randomUUID()}`,
          userId: "user-idem",
          reportType: ReportType.WEEKLY,
          filters,
        };
        const first = await client.submitReport(request);
        const second = await client.submitReport(request);
        expect(first.deduplicated).toBe(false);
        expect(second.deduplicated).toBe(true);
        expect(second.jobId).toBe(first.jobId);
        expect(second.statusUrl).toBe(first.statusUrl);
        expect(second.job?.id).toBe(first.jobId);
        expect(second.job?.userId).toBe("user-idem");
      });

      it("returns ALREADY_EXISTS for the same key with different filters", async () => {
        const client = reportClient(protocol, t.url);
        const idempotencyKey = `key-${randomUUID()}`;
        const base = { idempotencyKey, userId: "user-conflict", reportType: ReportType.WEEKLY };
        await client.submitReport({ ...base, filters: { region: "eu" } });
        const err = await connectErrorOf(
          client.submitReport({ ...base, filters: { region: "us" } }),
        );
        expect(err.code).toBe(Code.AlreadyExists);
        expect(err.rawMessage).toMatch(/idempotency key/);
      });

      it("uses the Idempotency-Key header when the field is empty", async () => {
        const client = reportClient(protocol, t.url);
        const key = `hdr-${randomUUID()}`;
        const request = { userId: "user-header", reportType: ReportType.WEEKLY, filters };
        const headers = { "idempotency-key": key };
        const first = await client.submitReport(request, { headers });
        const second = await client.submitReport(request, { headers });
        expect(first.deduplicated).toBe(false);
        expect(second.deduplicated).toBe(true);
        expect(second.jobId).toBe(first.jobId);
        // The header names the same key as the field would.
        const viaField = await client.submitReport({ ...request, idempotencyKey: key });
        expect(viaField.deduplicated).toBe(true);
        expect(viaField.jobId).toBe(first.jobId);
        // Without the header (and the field) every submit is a new job.
        const a = await client.submitReport(request);
        const b = await client.submitReport(request);
        expect(a.deduplicated).toBe(false);
        expect(b.deduplicated).toBe(false);
        expect(new Set([a.jobId, b.jobId, first.jobId]).size).toBe(3);
      });

      it("prefers the idempotency_key field over the Idempotency-Key header", async () => {
        const client = reportClient(protocol, t.url);
        const fieldKey = `field-${randomUUID()}`;
        const request = { userId: "user-prefer", reportType: ReportType.WEEKLY, filters };
        const first = await client.submitReport(
          { ...request, idempotencyKey: fieldKey },
          { headers: { "idempotency-key": `hdr-${randomUUID()}` } },
        );
        const second = await client.submitReport({ ...request, idempotencyKey: fieldKey });
        expect(second.deduplicated).toBe(true);
        expect(second.jobId).toBe(first.jobId);
      });

      it("returns NOT_FOUND from GetJob for an unknown id", async () => {
        const client = reportClient(protocol, t.url);
        const err = await connectErrorOf(client.getJob({ jobId: "unknownJob0123456789" }));
        expect(err.code).toBe(Code.NotFound);
        expect(err.rawMessage).toContain("unknownJob0123456789");
      });

      it("returns a succeeded job with its result, attempts and timestamps", async () => {
        const client = reportClient(protocol, t.url);
        const submitted = await client.submitReport({
          userId: "user-get",
          reportType: ReportType.WEEKLY,
          filters,
        });
        const job = await waitSucceeded(protocol, submitted.jobId);
        expect(job.id).toBe(submitted.jobId);
        expect(job.userId).toBe("user-get");
        expect(job.reportType).toBe(ReportType.WEEKLY);
        expect(job.progress).toBe(100);
        expect(job.attemptsMade).toBe(1);
        expect(job.maxAttempts).toBeGreaterThanOrEqual(1);
        expect(job.failureReason).toBe("");
        const result = job.result;
        if (result === undefined) throw new Error("succeeded job has no result");
        expect(result.contentType).toBe("text/csv");
        expect(result.sizeBytes).toBeGreaterThan(0n);
        const download = new URL(result.downloadUrl);
        expect(download.origin).toBe(new URL(t.url).origin);
        const created = job.createdAt;
        const started = job.startedAt;
        const finished = job.finishedAt;
        if (!created || !started || !finished) throw new Error("missing timestamps");
        expect(created.seconds).toBeGreaterThan(0n);
        const ms = (ts: typeof created) => Number(ts.seconds) * 1000 + ts.nanos / 1e6;
        expect(ms(started)).toBeGreaterThanOrEqual(ms(created));
        expect(ms(finished)).toBeGreaterThanOrEqual(ms(started));
      });

      it("serves the artifact at result.download_url as CSV of size_bytes", async () => {
        const client = reportClient(protocol, t.url);
        const submitted = await client.submitReport({
          userId: "user-download",
          reportType: ReportType.WEEKLY,
          filters,
        });
        const job = await waitSucceeded(protocol, submitted.jobId);
        const result = job.result;
        if (result === undefined) throw new Error("succeeded job has no result");
        const res = await fetch(result.downloadUrl);
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toMatch(/^text\/csv/);
        const bytes = Buffer.from(await res.arrayBuffer());
        expect(BigInt(bytes.length)).toBe(result.sizeBytes);
        const lines = bytes.toString("utf8").trimEnd().split("\r\n");
        expect(lines[0]).toBe("date,sessions,orders,revenue");
        // A weekly report: one row per day, ending on filters.end_date.
        expect(lines).toHaveLength(8);
        for (const line of lines.slice(1)) {
          expect(line).toMatch(/^\d{4}-\d{2}-\d{2},\d+,\d+,\d+\.\d{2}$/);
        }
        expect(lines[7]?.startsWith("2026-01-31,")).toBe(true);
      });

      it("streams every event of a job from WatchJob and ends OK after SUCCEEDED", async () => {
        const client = reportClient(protocol, t.url);
        const submitted = await client.submitReport({
          userId: "user-watch",
          reportType: ReportType.WEEKLY,
          filters,
        });
        const messages = await collect(client.watchJob({ jobId: submitted.jobId }, watchOptions));
        const events = messages.flatMap((m) => (m.event ? [m.event] : []));
        expect(events.map((e) => e.type)).toEqual([
          JobEventType.QUEUED,
          JobEventType.STARTED,
          JobEventType.PROGRESS,
          JobEventType.PROGRESS,
          JobEventType.SUCCEEDED,
        ]);
        expect(events.map((e) => e.state)).toEqual([
          JobState.QUEUED,
          JobState.RUNNING,
          JobState.RUNNING,
          JobState.RUNNING,
          JobState.SUCCEEDED,
        ]);
        const [queued, started, fetch, render, succeeded] = events;
        expect(queued?.progress).toBe(0);
        expect(queued?.attempt).toBe(0);
        expect(started?.progress).toBe(5);
        expect(started?.attempt).toBe(1);
        expect(fetch?.phase).toBe("fetch-data");
        expect(fetch?.progress).toBe(40);
        expect(render?.phase).toBe("render");
        expect(render?.progress).toBe(80);
        expect(succeeded?.progress).toBe(100);
        expect(succeeded?.result?.downloadUrl).toMatch(/^http:\/\//);
        expect(succeeded?.result?.contentType).toBe("text/csv");
        expect(succeeded?.result?.sizeBytes).toBeGreaterThan(0n);
        // Ids are the resume cursors: distinct, in order, each with a time.
        const ids = events.map((e) => e.id);
        expect(new Set(ids).size).toBe(ids.length);
        for (const e of events) expect(e.time).toBeDefined();
        // The job that the stream ended on is really finished.
        const { job } = await client.getJob({ jobId: submitted.jobId });
        expect(job?.state).toBe(JobState.SUCCEEDED);
        // Same file; the signature's expiry may differ between the two reads.
        const path = (url = "") => new URL(url).pathname;
        expect(path(job?.result?.downloadUrl)).toBe(path(succeeded?.result?.downloadUrl));
      });

      it("replays the whole history to a watcher that arrives after the end", async () => {
        const client = reportClient(protocol, t.url);
        const submitted = await client.submitReport({
          userId: "user-late",
          reportType: ReportType.WEEKLY,
          filters,
        });
        await waitSucceeded(protocol, submitted.jobId);
        const messages = await collect(client.watchJob({ jobId: submitted.jobId }, watchOptions));
        const types = messages.flatMap((m) => (m.event ? [m.event.type] : []));
        expect(types).toEqual([
          JobEventType.QUEUED,
          JobEventType.STARTED,
          JobEventType.PROGRESS,
          JobEventType.PROGRESS,
          JobEventType.SUCCEEDED,
        ]);
      });

      it("returns NOT_FOUND from WatchJob for an unknown id", async () => {
        const client = reportClient(protocol, t.url);
        const err = await connectErrorOf(
          collect(client.watchJob({ jobId: "unknownJob987654" }, watchOptions)),
        );
        expect(err.code).toBe(Code.NotFound);
      });
    });
  }
});
