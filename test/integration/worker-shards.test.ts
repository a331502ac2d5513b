/**
 * WORKER_SHARDS: a worker process consumes only the queue shards it is
 * given (one BullMQ worker per report type and shard), so worker groups can
 * split the shards; jobs of the other shards wait for their group.
 */
import { afterAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { shardTagOf } from "../../src/queue/keys.js";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { reportClient } from "../helpers/clients.js";
import { getJob, waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apps: TestApp[] = [];
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
});

describe("WORKER_SHARDS", () => {
  it("splits the shards between worker groups", async () => {
    const api = await startTestApp({ QUEUE_SHARDS: "4" }, { mode: "api" });
    apps.push(api);
    const prefix = api.config.redis.prefix;
    const client = reportClient("grpc", api.url);
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      ids.push((await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY })).jobId);
    }
    const tags = createQueueShards(prefix, 4).all.map((k) => k.tag);
    const shardOf = (id: string) => tags.indexOf(shardTagOf(id));
    const low = ids.filter((id) => shardOf(id) <= 1);
    const high = ids.filter((id) => shardOf(id) >= 2);
    expect(low).toHaveLength(4);
    expect(high).toHaveLength(4);

    const first = await startTestApp(
      { QUEUE_SHARDS: "4", WORKER_SHARDS: "0-1", REDIS_PREFIX: prefix },
      { mode: "worker" },
    );
    apps.push(first);
    // One BullMQ worker (one blocking connection) per report type and shard,
    // and with shard 0 the unsharded queues of jobs made before sharding.
    expect(first.app.worker?.all).toHaveLength(3 * (2 + 1));
    for (const id of low) await waitForState(client, id, JobState.SUCCEEDED);
    for (const id of high) expect((await getJob(client, id)).state).toBe(JobState.QUEUED);

    const second = await startTestApp(
      { QUEUE_SHARDS: "4", WORKER_SHARDS: "2,3", REDIS_PREFIX: prefix },
      { mode: "worker" },
    );
    apps.push(second);
    for (const id of high) await waitForState(client, id, JobState.SUCCEEDED);
  });
});
