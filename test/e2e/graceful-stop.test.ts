import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { type Protocol, reportClient } from "../helpers/clients.js";
import { killAllServices, spawnService } from "../helpers/processes.js";
import { startTestApp, type TestApp, testEnv, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** An open WatchJob stream, read in the background. */
interface OpenWatch {
  events: JobEvent[];
  /** Resolves once an event of `type` has arrived (or the stream ended). */
  reached(type: JobEventType): Promise<void>;
  /** Settles when the stream ends: undefined if it ended OK, else its error. */
  ended: Promise<ConnectError | undefined>;
}

function openWatch(protocol: Protocol, url: string, jobId: string): OpenWatch {
  const events: JobEvent[] = [];
  const waiters: { type: JobEventType; resolve: () => void }[] = [];
  const ended = (async () => {
    try {
      const stream = reportClient(protocol, url).watchJob(
        { jobId },
        { signal: AbortSignal.timeout(30_000) },
      );
      for await (const res of stream) {
        if (res.event === undefined) continue;
        events.push(res.event);
        for (const w of waiters.filter((w) => w.type === res.event?.type)) w.resolve();
      }
      return undefined;
    } catch (err) {
      return ConnectError.from(err);
    } finally {
      for (const w of waiters) w.resolve();
    }
  })();
  return {
    events,
    ended,
    reached(type) {
      if (events.some((e) => e.type === type)) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ type, resolve }));
    },
  };
}

describe("graceful stop (SIGTERM)", () => {
  let after: TestApp | undefined;
  afterAll(async () => {
    await killAllServices();
    await after?.close();
  });

  it("ends open watches with UNAVAILABLE, exits 0 without SIGKILL, and fails no job", async () => {
    const prefix = testPrefix();
    // One job at a time, each phase 1 s: the first job is running (and
    // outlasts the 2 s grace period), the second waits in the queue.
    const service = await spawnService(
      "all",
      testEnv({
        REDIS_PREFIX: prefix,
        WORKER_CONCURRENCY: "1",
        REPORT_PHASE_DELAY_MS: "1000",
        SHUTDOWN_GRACE_MS: "2000",
      }),
    );
    const client = reportClient("grpc", service.url);
    const running = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    const queued = await client.submitReport({ userId: "u2", reportType: ReportType.WEEKLY });

    const watches = [
      openWatch("grpc", service.url, running.jobId),
      openWatch("connect-json", service.url, running.jobId),
      openWatch("grpc-web", service.url, queued.jobId),
    ];
    await Promise.all([
      watches[0]?.reached(JobEventType.STARTED),
      watches[1]?.reached(JobEventType.STARTED),
      watches[2]?.reached(JobEventType.QUEUED),
    ]);
    expect((await client.getJob({ jobId: queued.jobId })).job?.state).toBe(JobState.QUEUED);

    const signalledAt = Date.now();
    service.kill("SIGTERM");

    for (const w of watches) {
      const err = await w.ended;
      expect(err, "the watch should end with an error").toBeInstanceOf(ConnectError);
      expect(err?.code).toBe(Code.Unavailable);
      expect(err?.rawMessage).toMatch(/shutting down/);
    }
    const exit = await waitFor(() => service.exit, {
      timeoutMs: 10_000,
      what: "the process to exit after SIGTERM",
    });
    const stopMs = Date.now() - signalledAt;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(service.logs.some((l) => l.msg === "stopping" && l.signal === "SIGTERM")).toBe(true);
    // Grace (2 s) for the running job, plus closing.
    expect(stopMs, `stopped after ${stopMs} ms`).toBeLessThan(6000);

    // Nothing failed: the unfinished job went back to the queue, and a new
    // process finishes both jobs.
    after = await startTestApp({ REDIS_PREFIX: prefix });
    const check = reportClient("grpc", after.url);
    for (const { jobId } of [running, queued]) {
      const { job } = await check.getJob({ jobId });
      expect(job?.state).not.toBe(JobState.FAILED);
    }
    for (const { jobId } of [running, queued]) {
      await waitFor(async () => (await check.getJob({ jobId })).job?.state === JobState.SUCCEEDED, {
        timeoutMs: 10_000,
        what: `job ${jobId} to succeed after the restart`,
      });
    }
    // The running job's history shows it was released, not failed or retried.
    const history: JobEvent[] = [];
    for await (const res of check.watchJob({ jobId: running.jobId })) {
      if (res.event) history.push(res.event);
    }
    const types = history.map((e) => JobEventType[e.type]);
    expect(types).not.toContain("FAILED");
    expect(types).not.toContain("RETRYING");
    expect(history.some((e) => e.type === JobEventType.QUEUED && e.phase === "released")).toBe(
      true,
    );
    expect(types.at(-1)).toBe("SUCCEEDED");
  });
});
