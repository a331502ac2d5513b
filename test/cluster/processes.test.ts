/**
 * The service as separate processes (`src/main.ts api|worker`) on the shared
 * cluster, configured only by REDIS_CLUSTER_NODES and QUEUE_SHARDS (no
 * REDIS_URL): a job submitted through one API process is watched to its end
 * through another, and a running job is cancelled through the other.
 */
import { afterAll, describe, expect, inject, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { killAllServices, spawnService } from "../helpers/processes.js";
import { waitForState } from "../helpers/rpc.js";
import { testPrefix } from "../helpers/test-app.js";

afterAll(async () => {
  await killAllServices();
});

describe("API and worker processes on a Redis Cluster", () => {
  it("watches and cancels, through another API process, jobs submitted through one", async () => {
    const env = {
      REDIS_CLUSTER_NODES: inject("redisClusterNodes"),
      QUEUE_SHARDS: "6",
      REDIS_PREFIX: testPrefix(),
      HOST: "127.0.0.1",
      METRICS_PORT: "0",
      REPORT_PHASE_DELAY_MS: "150",
    };
    const [api1, api2, worker] = await Promise.all([
      spawnService("api", env),
      spawnService("api", env),
      spawnService("worker", env),
    ]);
    expect(worker.exit).toBeUndefined();
    const submitter = reportClient("grpc", api1.url);
    const other = reportClient("connect-json", api2.url);

    const { jobId } = await submitter.submitReport({ userId: "p", reportType: ReportType.WEEKLY });
    const events: JobEvent[] = [];
    for await (const r of other.watchJob({ jobId })) if (r.event) events.push(r.event);
    expect(events[0]?.type).toBe(JobEventType.QUEUED);
    expect(events.at(-1)?.type).toBe(JobEventType.SUCCEEDED);
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);

    const running = await submitter.submitReport({ userId: "p", reportType: ReportType.MONTHLY });
    await waitForState(other, running.jobId, JobState.RUNNING);
    await other.cancelJob({ jobId: running.jobId });
    await waitForState(submitter, running.jobId, JobState.CANCELLED);
  });
});
