/**
 * Count-based retention: beyond RETENTION_SUCCEEDED_COUNT / _FAILED_COUNT the
 * oldest finished jobs are removed whole (record, events, BullMQ job, file),
 * while the newest stay; a retried job leaves the finished index.
 */
import { Code } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { PermanentReportError, type ReportGenerator } from "../../src/worker/generator.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred } from "../helpers/generators.js";
import { scanKeys } from "../helpers/redis-keys.js";
import { codeOf, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const retryGate = deferred();
const calls = new Map<string, number>();
/**
 * Fails permanently for users named "bad-*", succeeds otherwise; a retried
 * "bad-*" job waits for `retryGate`, then succeeds.
 */
const generator: ReportGenerator = {
  async generate(input) {
    const n = (calls.get(input.jobId) ?? 0) + 1;
    calls.set(input.jobId, n);
    if (input.userId.startsWith("bad-")) {
      if (n === 1) throw new PermanentReportError("bad filters");
      await retryGate.promise;
    }
    return csvOutput;
  },
};

describe("createJanitor() count-based retention", () => {
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  afterAll(async () => {
    redis?.disconnect();
    await t?.close();
  });

  it("keeps only the newest RETENTION_*_COUNT finished jobs of each kind", async () => {
    t = await startTestApp(
      {
        RETENTION_SUCCEEDED_COUNT: "2",
        RETENTION_FAILED_COUNT: "1",
        RETENTION_SWEEP_MS: "3600000",
        // Reports in files of their own, whose files this test checks.
        REPORT_SEGMENTS: "false",
      },
      { generators: { weekly: generator } },
    );
    redis = new Redis(t.config.redis.url);
    const client = reportClient("grpc", t.url);
    const run = async (userId: string, state: JobState) => {
      const { jobId } = await client.submitReport({ userId, reportType: ReportType.WEEKLY });
      await waitForState(client, jobId, state);
      return jobId;
    };
    // One after the other, so their finish times are ordered.
    const ok = [];
    for (let i = 0; i < 4; i++) ok.push(await run(`good-${i}`, JobState.SUCCEEDED));
    const bad = [];
    for (let i = 0; i < 3; i++) bad.push(await run(`bad-${i}`, JobState.FAILED));
    // A FAILED job that is retried is live again (held RUNNING here): never trimmed as finished.
    await client.retryJob({ jobId: bad[0] as string });
    await waitForState(client, bad[0] as string, JobState.RUNNING);

    await t.app.janitor?.sweep();

    const dir = deploymentArtifactDir(t.config.worker.artifactDir, t.config.redis.prefix);
    const gone = [ok[0], ok[1], bad[1]] as string[];
    const kept = [ok[2], ok[3], bad[2], bad[0]] as string[];
    for (const id of gone) {
      expect(await codeOf(client.getJob({ jobId: id })), `job ${id}`).toBe(Code.NotFound);
      expect(await scanKeys(redis, `*${id}*`), `keys of ${id}`).toEqual([]);
      expect(await reportFilesOf(dir, id), `report files of ${id}`).toEqual([]);
    }
    for (const id of kept) expect((await client.getJob({ jobId: id })).job?.id).toBe(id);
    for (const id of [ok[2], ok[3]] as string[]) {
      expect(await reportFilesOf(dir, id), `report files of ${id}`).toHaveLength(1);
    }
    retryGate.resolve();
    await waitForState(client, bad[0] as string, JobState.SUCCEEDED);
    await t.app.janitor?.sweep();
    // bad[0] is now one of the 2 newest SUCCEEDED jobs; ok[2] is the oldest and goes.
    expect(await codeOf(client.getJob({ jobId: ok[2] as string }))).toBe(Code.NotFound);
    expect(await redis.zcard(`${t.config.redis.prefix}:finished:succeeded`)).toBe(2);
    expect(await redis.zcard(`${t.config.redis.prefix}:finished:failed`)).toBe(1);
    const listed = (await client.listJobs({})).jobs.map((j) => j.id);
    for (const id of gone) expect(listed).not.toContain(id);
  });
});
