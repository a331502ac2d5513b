import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { PermanentReportError, type ReportGenerator } from "../../src/worker/generator.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput } from "../helpers/generators.js";
import { scanKeys } from "../helpers/redis-keys.js";
import { errorOf, type ReportClient, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** A weekly generator that fails permanently for users named "bad-*" and succeeds otherwise. */
const generator: ReportGenerator = {
  async generate(input) {
    if (input.userId.startsWith("bad-")) throw new PermanentReportError("bad filters");
    return csvOutput;
  },
};

describe("retention", () => {
  // A plain connection to the run's Redis, opened with the first app.
  let redis: Redis;
  const apps: TestApp[] = [];
  afterEach(async () => {
    for (const app of apps) await app.close();
    apps.length = 0;
  });
  afterAll(() => {
    redis?.disconnect();
  });

  async function start(env: Record<string, string>): Promise<{ t: TestApp; client: ReportClient }> {
    // Reports in files of their own (REPORT_SEGMENTS=false), whose files this test checks;
    // segments: report-segments.test.ts.
    const t = await startTestApp(
      { REPORT_SEGMENTS: "false", ...env },
      { generators: { weekly: generator } },
    );
    apps.push(t);
    redis ??= new Redis(t.config.redis.url);
    return { t, client: reportClient("grpc", t.url) };
  }

  /** Keys of `prefix` a job may leave behind when it has really gone. */
  async function leftovers(t: TestApp, jobId: string): Promise<string[]> {
    const prefix = t.config.redis.prefix;
    const out: string[] = [];
    // Any key of the whole server naming the job: record, events, BullMQ's job hash and logs.
    out.push(...(await scanKeys(redis, `*${jobId}*`)));
    // Index entries (tenant and user indexes).
    for (const index of await scanKeys(redis, `${prefix}:idx:*`)) {
      if ((await redis.zscore(index, jobId)) !== null) out.push(`${index} ∋ ${jobId}`);
    }
    // BullMQ's finished sets.
    for (const set of await scanKeys(redis, `${prefix}:bull:*:completed`)) {
      if ((await redis.zscore(set, jobId)) !== null) out.push(`${set} ∋ ${jobId}`);
    }
    for (const set of await scanKeys(redis, `${prefix}:bull:*:failed`)) {
      if ((await redis.zscore(set, jobId)) !== null) out.push(`${set} ∋ ${jobId}`);
    }
    // Idempotency records (their keys hold a digest, not the id).
    for (const key of await scanKeys(redis, `${prefix}:idem:*`)) {
      if ((await redis.hget(key, "job")) === jobId) out.push(key);
    }
    // The report's file (or folder, in the layouts before).
    const dir = deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix);
    for (const file of await reportFilesOf(dir, jobId)) out.push(`report file ${file}`);
    return out;
  }

  /** Waits until every trace of `jobId` is gone, sweeping on the way. */
  async function waitUntilGone(t: TestApp, jobId: string): Promise<void> {
    let last: string[] = [];
    await waitFor(
      async () => {
        await t.app.janitor?.sweep();
        last = await leftovers(t, jobId);
        return last.length === 0;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: `every trace of ${jobId} to go` },
    ).catch((err: unknown) => {
      throw new Error(`still there: ${last.join(", ")}`, { cause: err });
    });
  }

  const shortRetention = {
    RETENTION_SUCCEEDED_SECONDS: "1",
    RETENTION_FAILED_SECONDS: "1",
    IDEMPOTENCY_TTL_SECONDS: "1",
    RETENTION_SWEEP_MS: "200",
  };

  for (const outcome of ["SUCCEEDED", "FAILED"] as const) {
    it(`removes every key, index entry and file of a ${outcome} job once its retention passes`, async () => {
      const { t, client } = await start(shortRetention);
      const userId = outcome === "SUCCEEDED" ? "good-1" : "bad-1";
      const { jobId } = await client.submitReport({
        userId,
        reportType: ReportType.WEEKLY,
        idempotencyKey: `ret-${outcome}`,
      });
      const job = await waitForState(client, jobId, JobState[outcome]);
      if (outcome === "SUCCEEDED") {
        expect(
          await reportFilesOf(
            deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix),
            jobId,
          ),
        ).toHaveLength(1);
        expect(job.result?.downloadUrl).toMatch(/\/v1\/artifacts\//);
      }
      // Before it expires, it is there to find.
      expect((await scanKeys(redis, `*${jobId}*`)).length).toBeGreaterThan(0);
      expect((await client.listJobs({ userId })).jobs.map((j) => j.id)).toEqual([jobId]);

      await waitUntilGone(t, jobId);

      expect((await errorOf(client.getJob({ jobId })))?.code).toBe(Code.NotFound);
      expect((await client.listJobs({ userId })).jobs).toEqual([]);
      expect((await client.listJobs({})).jobs.map((j) => j.id)).not.toContain(jobId);
      expect((await errorOf(client.watchJob({ jobId })[Symbol.asyncIterator]().next()))?.code).toBe(
        Code.NotFound,
      );
      if (outcome === "SUCCEEDED") {
        // The signed link can no longer be verified (its job is gone): refused like any bad link.
        const link = new URL(job.result?.downloadUrl ?? "");
        expect((await fetch(link)).status).toBe(403);
        // The bare path (the caller's key; open mode here) finds nothing.
        expect((await fetch(new URL(link.pathname, link))).status).toBe(404);
      }
    });
  }

  it("removes index entries and files even without an explicit sweep (the janitor's timer)", async () => {
    const { t, client } = await start(shortRetention);
    const { jobId } = await client.submitReport({
      userId: "good-2",
      reportType: ReportType.WEEKLY,
    });
    await waitForState(client, jobId, JobState.SUCCEEDED);
    let last: string[] = [];
    await waitFor(
      async () => {
        last = await leftovers(t, jobId);
        return last.length === 0;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: "the janitor to clear the job" },
    ).catch((err: unknown) => {
      throw new Error(`still there: ${last.join(", ")}`, { cause: err });
    });
  });

  it("does not resurrect or duplicate a job when its idempotency key outlives it", async () => {
    const { t, client } = await start({
      RETENTION_SUCCEEDED_SECONDS: "1",
      IDEMPOTENCY_TTL_SECONDS: "60",
      RETENTION_SWEEP_MS: "200",
    });
    const request = {
      userId: "good-3",
      reportType: ReportType.WEEKLY,
      idempotencyKey: "outlives-its-job",
    };
    const { jobId } = await client.submitReport(request);
    await waitForState(client, jobId, JobState.SUCCEEDED);
    // While the job lives, the key answers with it.
    const dup = await client.submitReport(request);
    expect(dup).toMatchObject({ jobId, deduplicated: true });

    await waitFor(async () => (await errorOf(client.getJob({ jobId })))?.code === Code.NotFound, {
      timeoutMs: 10_000,
      what: "the job to expire",
    });
    const prefix = t.config.redis.prefix;
    const jobKeysBefore = await scanKeys(redis, `${prefix}:job:*`);
    expect(jobKeysBefore).toEqual([]);

    for (const attempt of [1, 2]) {
      const err = await errorOf(client.submitReport(request));
      expect(err?.code, `repeat ${attempt}`).toBe(Code.AlreadyExists);
      expect(err?.rawMessage).toMatch(/expired/);
      expect(err?.rawMessage).toContain(jobId);
    }
    // Over plain HTTP too.
    const res = await fetch(`${t.url}/v1/reports`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": request.idempotencyKey },
      body: JSON.stringify({ userId: request.userId, reportType: "weekly" }),
    });
    // Not a payload mismatch (that is 422): the key outlived its job, a conflict.
    expect(res.status).toBe(409);

    // Nothing came back to life and nothing new was made.
    expect(await scanKeys(redis, `${prefix}:job:*`)).toEqual([]);
    expect(await scanKeys(redis, `${prefix}:events:*`)).toEqual([]);
    expect((await client.listJobs({})).jobs).toEqual([]);
    expect((await errorOf(client.getJob({ jobId })))?.code).toBe(Code.NotFound);
    // A new key makes a new job.
    const fresh = await client.submitReport({ ...request, idempotencyKey: "a-new-key" });
    expect(fresh.jobId).not.toBe(jobId);
    expect(fresh.deduplicated).toBe(false);
  });
});
