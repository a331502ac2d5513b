/**
 * Raising QUEUE_SHARDS on a single Redis: jobs made before (unsharded ids
 * and keys) keep working. Workers drain their queues, GetJob, WatchJob and
 * CancelJob find them, ListJobs lists them with the new, sharded jobs, and a
 * page token made before the change still pages.
 */
import { afterAll, describe, expect, it } from "vitest";
import { JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { shardTagOf } from "../../src/queue/keys.js";
import { reportClient } from "../helpers/clients.js";
import { waitForState } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const apps: TestApp[] = [];
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
});

describe("QUEUE_SHARDS raised from 1 on a single Redis", () => {
  it("drains, finds, watches, cancels and lists the jobs made before", async () => {
    const before = await startTestApp({}, { mode: "api" });
    const prefix = before.config.redis.prefix;
    const old = reportClient("grpc", before.url);
    const made: string[] = [];
    for (let i = 0; i < 4; i++) {
      made.push((await old.submitReport({ userId: "m", reportType: ReportType.WEEKLY })).jobId);
    }
    const oldPage = await old.listJobs({ userId: "m", pageSize: 2 });
    await before.close();
    expect(made.every((id) => shardTagOf(id) === undefined)).toBe(true);

    const after = await startTestApp({ QUEUE_SHARDS: "3", REDIS_PREFIX: prefix });
    apps.push(after);
    const client = reportClient("grpc", after.url);
    const [cancelMe, ...rest] = made as [string, ...string[]];
    // Cancelled while still queued in the unsharded queue (or, if a worker was
    // quicker, the job ends anyway: either way it ends).
    await client.cancelJob({ jobId: cancelMe }).catch(() => undefined);
    for (const id of rest) await waitForState(client, id, JobState.SUCCEEDED);
    const events: JobEventType[] = [];
    for await (const r of client.watchJob({ jobId: rest[0] as string })) {
      if (r.event) events.push(r.event.type);
    }
    expect(events.at(-1)).toBe(JobEventType.SUCCEEDED);

    const fresh = (await client.submitReport({ userId: "m", reportType: ReportType.WEEKLY })).jobId;
    expect(shardTagOf(fresh)).toMatch(/^s/);
    const listed = (await client.listJobs({ userId: "m", pageSize: 10 })).jobs.map((j) => j.id);
    expect([...listed].sort()).toEqual([...made, fresh].sort());
    expect(listed[0]).toBe(fresh);
    // A token from before the change pages on through the same jobs.
    const next = await client.listJobs({
      userId: "m",
      pageSize: 10,
      pageToken: oldPage.nextPageToken,
    });
    expect(next.jobs.map((j) => j.id)).toEqual(listed.slice(3));
  });
});
