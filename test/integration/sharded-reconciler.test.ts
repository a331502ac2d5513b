/**
 * The reconciler keeps every shard's jobs moving: a job of a shard other
 * than the first whose BullMQ job vanished is queued again and runs.
 */
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { queueNameFor, shardTagOf } from "../../src/queue/keys.js";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { reportClient } from "../helpers/clients.js";
import { waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apps: TestApp[] = [];
const closers: Array<() => unknown> = [];
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  for (const c of closers) await c();
});

describe("the reconciler over queue shards", () => {
  it("queues again a job of the last shard whose BullMQ job vanished", async () => {
    const api = await startTestApp({ QUEUE_SHARDS: "3" }, { mode: "api" });
    apps.push(api);
    const prefix = api.config.redis.prefix;
    const client = reportClient("grpc", api.url);
    const shards = createQueueShards(prefix, 3);
    const last = shards.all[2];
    let jobId = "";
    while (jobId === "") {
      const { jobId: id } = await client.submitReport({
        userId: "r",
        reportType: ReportType.WEEKLY,
      });
      if (shardTagOf(id) === last?.tag) jobId = id;
    }
    const redis = new Redis(api.config.redis.url);
    closers.push(() => redis.disconnect());
    const queue = new Queue(queueNameFor("weekly"), {
      connection: redis,
      prefix: last?.bullPrefix,
    });
    closers.push(() => queue.close());
    expect(await queue.remove(jobId)).toBe(1);

    const worker = await startTestApp(
      { QUEUE_SHARDS: "3", REDIS_PREFIX: prefix, RECONCILE_INTERVAL_MS: "200" },
      { mode: "worker" },
    );
    apps.push(worker);
    const job = await waitForState(client, jobId, JobState.SUCCEEDED, 20_000);
    expect(job.state).toBe(JobState.SUCCEEDED);
  });
});
