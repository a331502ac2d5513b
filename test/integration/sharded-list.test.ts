/**
 * ListJobs over queue shards when a shard's scan stops early (its budget):
 * the page holds only jobs no shard can still have something newer than,
 * so paging gives every job once, newest first, even one entry per scan.
 */
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { createJobLister } from "../../src/queue/job-lister.js";
import type { Keys } from "../../src/queue/keys.js";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apps: TestApp[] = [];
const conns: Redis[] = [];
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  for (const c of conns) c.disconnect();
});

describe("ListJobs over queue shards", () => {
  it("pages every job once, newest first, when each shard's scan stops after a few entries", async () => {
    const t = await startTestApp({ QUEUE_SHARDS: "3" }, { mode: "api" });
    apps.push(t);
    const client = reportClient("grpc", t.url);
    const made: string[] = [];
    for (let i = 0; i < 17; i++) {
      made.push((await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY })).jobId);
    }
    const redis = new Redis(t.config.redis.url);
    conns.push(redis);
    const shards = createQueueShards(t.config.redis.prefix, 3);
    // Everything on one page (the default budget covers it): the order to match.
    const whole = createJobLister({ redis, keys: shards.all[0] as Keys, shards: shards.all });
    const reference = (await whole.list({ tenant: "default", states: [], pageSize: 100 })).jobs.map(
      (j) => j.id,
    );
    expect([...reference].sort()).toEqual([...made].sort());
    for (const budget of [1, 2, 5]) {
      const lister = createJobLister({
        redis,
        keys: shards.all[0] as Keys,
        shards: shards.all,
        scanBudget: budget,
      });
      const listed: string[] = [];
      let pageToken: string | undefined;
      for (let pages = 0; pages < 100; pages++) {
        const page = await lister.list({ tenant: "default", states: [], pageSize: 4, pageToken });
        listed.push(...page.jobs.map((j) => j.id));
        if (page.nextPageToken === "") break;
        pageToken = page.nextPageToken;
      }
      expect(listed).toEqual(reference);
    }
  });
});
