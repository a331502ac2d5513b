/**
 * The Node client's resumable watchJob(jobId) across an API process restart:
 * an API process and a separate worker process share the test Redis; while a
 * job runs, the API is killed (SIGKILL: connections reset; SIGTERM: watches
 * end with UNAVAILABLE) and started again on the same port. The iterator must
 * go on by itself, with no gap and no duplicate, and end with the terminal event.
 */
import { afterAll, describe, expect, it } from "vitest";
import { JobEventType, ReportType } from "../../gen/reports/v1/job_pb.js";
import { createReportsClient, type ReportsProtocol } from "../../src/client/reports-client.js";
import { killAllServices, type ServiceProcess, spawnService } from "../helpers/processes.js";
import { testEnv, testPrefix } from "../helpers/test-app.js";

describe("createReportsClient().watchJob(jobId) across an API restart", () => {
  afterAll(async () => {
    await killAllServices();
  });

  it.each<[ReportsProtocol, NodeJS.Signals]>([
    ["grpc", "SIGKILL"],
    ["connect", "SIGTERM"],
  ])(
    "over %s, with the API stopped by %s, sees every event once and in order",
    async (protocol, signal) => {
      const env = testEnv({ REDIS_PREFIX: testPrefix(), REPORT_PHASE_DELAY_MS: "700" });
      let api: ServiceProcess = await spawnService("api", env);
      const worker = await spawnService("worker", {
        ...env,
        ARTIFACT_DIR: api.env.ARTIFACT_DIR ?? "",
      });
      const port = api.env.PORT ?? "";
      const client = createReportsClient({
        baseUrl: api.url,
        protocol,
        retry: { initialDelayMs: 50, maxDelayMs: 500 },
        maxWatchReconnects: 40,
      });
      const { jobId } = await client.submitReport({
        userId: "restart",
        reportType: ReportType.WEEKLY,
      });

      const seen: string[] = [];
      const types: JobEventType[] = [];
      let restarted: Promise<ServiceProcess> | undefined;
      for await (const event of client.watchJob(jobId)) {
        seen.push(event.id);
        types.push(event.type);
        if (event.type === JobEventType.STARTED && restarted === undefined) {
          // The job is running on the worker; take the API away under the open stream.
          api.kill(signal);
          await api.exited;
          restarted = spawnService("api", {
            ...env,
            PORT: port,
            ARTIFACT_DIR: api.env.ARTIFACT_DIR ?? "",
          });
        }
      }
      api = await (restarted ?? Promise.reject(new Error("the job never started")));
      expect(types.at(-1)).toBe(JobEventType.SUCCEEDED);
      expect(types).toEqual([
        JobEventType.QUEUED,
        JobEventType.STARTED,
        JobEventType.PROGRESS,
        JobEventType.PROGRESS,
        JobEventType.SUCCEEDED,
      ]);
      // Exactly the job's log, as a fresh watch on the new API process reads it.
      const fresh: string[] = [];
      for await (const res of client.watchJob({ jobId })) if (res.event) fresh.push(res.event.id);
      expect(seen).toEqual(fresh);
      api.kill("SIGTERM");
      worker.kill("SIGTERM");
      await Promise.all([api.exited, worker.exited]);
    },
  );
});
