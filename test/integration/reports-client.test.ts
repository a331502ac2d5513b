/**
 * createReportsClient() against a real server (connect-node on the project's
 * dual HTTP/1.1 + HTTP/2 server) whose ReportService records what it gets and
 * answers UNAVAILABLE on demand: the Authorization header over each protocol,
 * which calls are retried and which are not, and the bounded retry budget.
 * Then the real app: a full submit-and-watch round trip.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { JobEventType, JobSchema, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { createDualServer, type DualServer } from "../../src/api/server.js";
import { createReportsClient, type ReportsProtocol } from "../../src/client/reports-client.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const run = promisify(execFile);
const reportctlBin = fileURLToPath(new URL("../../bin/reportctl.mjs", import.meta.url));

/** What the recording service saw, per method. */
interface Seen {
  calls: Record<string, number>;
  authorization: (string | null)[];
  /** Calls of a method that fail with UNAVAILABLE before it answers. */
  failFirst: Record<string, number>;
}

function recordingService(seen: Seen): Partial<ServiceImpl<typeof ReportService>> {
  const enter = (method: string, header: Headers) => {
    seen.calls[method] = (seen.calls[method] ?? 0) + 1;
    seen.authorization.push(header.get("authorization"));
    if ((seen.failFirst[method] ?? 0) >= (seen.calls[method] ?? 0)) {
      throw new ConnectError("storage is unavailable; retry shortly", Code.Unavailable);
    }
  };
  const job = create(JobSchema, { id: "job1", userId: "u", state: JobState.QUEUED });
  return {
    async getJob(_req, ctx) {
      enter("GetJob", ctx.requestHeader);
      return { job };
    },
    async listJobs(_req, ctx) {
      enter("ListJobs", ctx.requestHeader);
      return { jobs: [job] };
    },
    async submitReport(_req, ctx) {
      enter("SubmitReport", ctx.requestHeader);
      return { jobId: "job1", job };
    },
    async retryJob(_req, ctx) {
      enter("RetryJob", ctx.requestHeader);
      return { job };
    },
    async cancelJob(_req, ctx) {
      enter("CancelJob", ctx.requestHeader);
      return { job };
    },
  };
}

describe("createReportsClient()", () => {
  const seen: Seen = { calls: {}, authorization: [], failFirst: {} };
  let server: DualServer;
  let url: string;

  beforeAll(async () => {
    const logger = pino({ level: "silent" });
    const handler = connectNodeAdapter({
      routes: (router) => router.service(ReportService, recordingService(seen)),
    });
    server = createDualServer(handler, { keepaliveMs: 30_000, logger });
    const address = await server.listen(0, "127.0.0.1");
    url = `http://127.0.0.1:${address.port}`;
  });
  afterAll(async () => {
    await server.close(1000);
  });
  beforeEach(() => {
    seen.calls = {};
    seen.authorization = [];
    seen.failFirst = {};
  });

  const fast = { initialDelayMs: 5, maxDelayMs: 20 };

  it.each<ReportsProtocol>(["grpc", "connect", "grpc-web"])(
    "sends Authorization: Bearer <apiKey> over %s, and none without a key",
    async (protocol) => {
      await createReportsClient({ baseUrl: url, protocol, apiKey: "k-123" }).getJob({
        jobId: "job1",
      });
      await createReportsClient({ baseUrl: url, protocol }).getJob({ jobId: "job1" });
      expect(seen.authorization).toEqual(["Bearer k-123", null]);
    },
  );

  it("reportctl sends its --api-key, or REPORTS_API_KEY, as the bearer token", async () => {
    const cli = (args: string[], env: Record<string, string>) =>
      run(process.execPath, [reportctlBin, "--url", url, ...args, "get", "job1", "--json"], {
        env: { PATH: process.env.PATH ?? "", ...env },
      });
    await cli([], { REPORTS_API_KEY: "from-env" });
    await cli(["--api-key", "from-flag", "--protocol", "connect"], { REPORTS_API_KEY: "from-env" });
    expect(seen.authorization).toEqual(["Bearer from-env", "Bearer from-flag"]);
  });

  it("retries GetJob on UNAVAILABLE until it answers", async () => {
    seen.failFirst.GetJob = 2;
    const client = createReportsClient({ baseUrl: url, protocol: "grpc", retry: fast });
    const { job } = await client.getJob({ jobId: "job1" });
    expect(job?.id).toBe("job1");
    expect(seen.calls.GetJob).toBe(3);
  });

  it("gives up after maxAttempts with the UNAVAILABLE error", async () => {
    seen.failFirst.ListJobs = 10;
    const client = createReportsClient({
      baseUrl: url,
      protocol: "connect",
      retry: { ...fast, maxAttempts: 3 },
    });
    await expect(client.listJobs({})).rejects.toMatchObject({ code: Code.Unavailable });
    expect(seen.calls.ListJobs).toBe(3);
  });

  it("retries SubmitReport only when it carries an idempotency key", async () => {
    const client = createReportsClient({ baseUrl: url, protocol: "grpc", retry: fast });
    seen.failFirst.SubmitReport = 1;
    await expect(
      client.submitReport({ userId: "u", reportType: ReportType.WEEKLY }),
    ).rejects.toMatchObject({ code: Code.Unavailable });
    expect(seen.calls.SubmitReport).toBe(1);

    seen.calls = {};
    await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY, idempotencyKey: "k" });
    expect(seen.calls.SubmitReport).toBe(2);
  });

  it("never repeats RetryJob, and repeats CancelJob (cancelling twice is cancelling once)", async () => {
    const client = createReportsClient({ baseUrl: url, protocol: "grpc", retry: fast });
    seen.failFirst.RetryJob = 1;
    await expect(client.retryJob({ jobId: "job1" })).rejects.toMatchObject({
      code: Code.Unavailable,
    });
    expect(seen.calls.RetryJob).toBe(1);
    seen.failFirst.CancelJob = 1;
    await client.cancelJob({ jobId: "job1" });
    expect(seen.calls.CancelJob).toBe(2);
  });

  it("retries GetJob while nothing listens on the port (connection refused)", async () => {
    const client = createReportsClient({
      baseUrl: "http://127.0.0.1:9",
      protocol: "grpc",
      retry: { ...fast, maxAttempts: 2 },
    });
    await expect(client.getJob({ jobId: "job1" })).rejects.toMatchObject({
      code: Code.Unavailable,
    });
  });
});

describe("createReportsClient() against the service", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  it.each<ReportsProtocol>(["grpc", "connect", "grpc-web"])(
    "submits and follows a job to SUCCEEDED over %s",
    async (protocol) => {
      const client = createReportsClient({ baseUrl: t.url, protocol });
      const { jobId } = await client.submitReport({ userId: "c1", reportType: ReportType.WEEKLY });
      const types: JobEventType[] = [];
      for await (const event of client.watchJob(jobId)) types.push(event.type);
      expect(types).toEqual([
        JobEventType.QUEUED,
        JobEventType.STARTED,
        JobEventType.PROGRESS,
        JobEventType.PROGRESS,
        JobEventType.SUCCEEDED,
      ]);
      // Resumed after the second event: exactly the rest.
      const all: string[] = [];
      for await (const res of client.watchJob({ jobId })) if (res.event) all.push(res.event.id);
      const rest: string[] = [];
      for await (const e of client.watchJob(jobId, { afterEventId: all[1] })) rest.push(e.id);
      expect(rest).toEqual(all.slice(2));
      // From the terminal event: ends at once.
      const none: string[] = [];
      for await (const e of client.watchJob(jobId, { afterEventId: all.at(-1) })) none.push(e.id);
      expect(none).toEqual([]);
    },
  );

  it("passes NOT_FOUND through without retrying", async () => {
    const client = createReportsClient({ baseUrl: t.url, protocol: "grpc" });
    await expect(client.getJob({ jobId: "noSuchJob1" })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    const events = client.watchJob("noSuchJob1");
    await expect(
      (async () => {
        for await (const _ of events) break;
      })(),
    ).rejects.toMatchObject({ code: Code.NotFound });
  });
});
