import { mkdirSync, watch } from "node:fs";
import { Redis } from "ioredis";
import { type Logger, pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import type { AppOptions } from "../../src/app.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { recordField } from "../../src/queue/job-record.js";
import type { Keys } from "../../src/queue/keys.js";
import { createArtifactStore } from "../../src/worker/artifact-store.js";
import { lockLostReason } from "../../src/worker/processor.js";
import { asAnotherWorker as anotherWorker } from "../helpers/another-worker.js";
import { reportFilesOf } from "../helpers/artifact-files.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, type Deferred, deferred, scripted } from "../helpers/generators.js";
import { startRedisServer } from "../helpers/redis-server.js";
import { getJob, waitForEnd } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

/** A logger whose lines the test can read. */
function capturedLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: "info" },
    {
      write(line: string) {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  return { logger, lines };
}

/** Resolves when `signal` aborts. */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

describe("an attempt that lost its job", () => {
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  afterEach(async () => {
    redis?.disconnect();
    await t?.close();
    t = redis = undefined;
  });

  /** Starts `t` with `options`, submits a weekly job and waits until its generator `entered`. */
  async function startedJob(options: AppOptions, entered: Deferred) {
    // Reports in files of their own (REPORT_SEGMENTS=false), whose files this test checks;
    // segments: report-segments.test.ts.
    const app = await startTestApp({ REPORT_SEGMENTS: "false" }, options);
    t = app;
    const client = reportClient("grpc", app.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await entered.promise;
    // progress() resolves once its write is queued, and a report right after
    // STARTED is held up to PROGRESS_LINGER_MS: wait until it was written.
    await waitFor(async () => (await getJob(client, jobId)).progress === 30, {
      what: "the first progress write to be applied",
    });
    return { app, client, jobId };
  }

  /** What the test needs to act as another worker on `t`'s Redis. */
  async function asAnotherWorker(app: TestApp, jobId: string) {
    redis = new Redis(app.config.redis.url);
    return { redis, ...(await anotherWorker(app, redis, jobId)) };
  }

  /** The record and the log of the job. */
  async function state(r: Redis, keys: Keys, jobId: string) {
    const events = (await r.xrange(keys.events(jobId), "-", "+")).map(([id, f]) =>
      decodeEvent(id, f),
    );
    return { record: await r.hgetall(keys.job(jobId)), events };
  }

  it("changes nothing and deletes only its own file when another worker took the job over and finished it", async () => {
    const entered = deferred();
    const gate = deferred();
    // A generator that does not watch its signal: it returns its report after the takeover.
    const weekly = scripted(async (_input, progress) => {
      await progress(30, "fetch-data");
      entered.resolve();
      await gate.promise;
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    // A long lock: A learns of the takeover from its refused SUCCEEDED, after storing its file.
    const { app, client, jobId } = await startedJob(
      { generators: { weekly }, logger, lockDurationMs: 30_000 },
      entered,
    );

    // Worker B fetches the job (its lock token in BullMQ's lock), runs and publishes it.
    const b = await asAnotherWorker(app, jobId);
    await b.redis.set(b.keys.bullJobLock("weekly", jobId), "fetch-B", "PX", 60_000);
    const own = { attempt: 1, token: "attempt-B", lockToken: "fetch-B" };
    const started = await b.transitions.apply(b.job, "started", {
      ...own,
      at: Date.now(),
      maxAttempts: 3,
    });
    expect(started.applied).toBe(true);
    const artifact = await createArtifactStore(
      deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix),
      { segments: false },
    ).put(jobId, "1-bbbbbbbbbbbb", "b.csv", "text/csv", "from,b\n");
    const done = await b.transitions.apply(b.job, "succeeded", {
      ...own,
      at: Date.now(),
      startedAt: Date.now(),
      artifact,
    });
    expect(done.applied).toBe(true);
    const before = await state(b.redis, b.keys, jobId);

    // A's generator returns its report: A stores it, is refused, removes its own file.
    gate.resolve();
    await waitFor(() => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"), {
      what: "A's attempt to end as lost",
    });
    expect(await state(b.redis, b.keys, jobId)).toEqual(before);
    expect(before.events.map((e) => `${e.type}(${e.attempt})`)).toEqual([
      "queued(0)",
      "started(1)",
      "progress(1)",
      "started(1)",
      "succeeded(1)",
    ]);
    expect(
      await reportFilesOf(
        deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix),
        jobId,
      ),
    ).toEqual([`${jobId}@1-bbbbbbbbbbbb`]);
    const job = await getJob(client, jobId);
    const res = await fetch(job.result?.downloadUrl ?? "");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("from,b\n");
  });

  it("aborts the generator as soon as its lock is gone, writes nothing, and the job runs again once", async () => {
    let first: AbortSignal | undefined;
    const entered = deferred();
    const weekly = scripted(async (_input, progress, signal) => {
      await progress(30, "fetch-data");
      if (first === undefined) {
        first = signal;
        entered.resolve();
        // Works until told to stop.
        await aborted(signal);
        signal.throwIfAborted();
      }
      return csvOutput;
    });
    const { app, client, jobId } = await startedJob({ generators: { weekly } }, entered);

    // The lock expires (a partition, a pause): nobody else has started the job yet.
    const a = await asAnotherWorker(app, jobId);
    const before = await state(a.redis, a.keys, jobId);
    await a.redis.del(a.keys.bullJobLock("weekly", jobId));
    const goneAt = Date.now();
    await waitFor(() => first?.aborted, { what: "the generator's signal to abort" });
    expect(first?.reason).toBe(lockLostReason);
    // At its next renewal (every 250 ms here), well before the lock (2 s) would have run out.
    expect(Date.now() - goneAt).toBeLessThan(1500);

    // The stalled check gives the job to a worker again, which runs it to its end, once.
    const job = await waitForEnd(client, jobId, { what: "the re-run to finish" });
    expect(job.result?.downloadUrl).toBeTruthy();
    const after = await state(a.redis, a.keys, jobId);
    expect(after.events.slice(0, before.events.length)).toEqual(before.events);
    expect(after.events.map((e) => `${e.type}(${e.attempt})`)).toEqual([
      "queued(0)",
      "started(1)",
      "progress(1)",
      "started(1)",
      "progress(1)",
      "succeeded(1)",
    ]);
    expect(weekly.calls).toEqual([1, 1]);
    expect(
      await reportFilesOf(
        deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix),
        jobId,
      ),
    ).toHaveLength(1);
  });

  it("runs a job this worker fetches again while its stale attempt still runs here once that attempt ended, once", async () => {
    const stale = deferred();
    const entered = deferred();
    const renderStepMs = 200;
    let first = true;
    // The first attempt ignores its signal until the test lets it go; later
    // attempts outlast a lock duration (2 s here), renewing as they go.
    const weekly = scripted(async (_input, progress) => {
      await progress(30, "fetch-data");
      if (first) {
        first = false;
        entered.resolve();
        await stale.promise;
        return csvOutput;
      }
      // Simulated work, not a wait for a condition: the attempt must outlast a lock.
      for (let i = 0; i < 15; i++) {
        await new Promise((r) => setTimeout(r, renderStepMs));
        await progress(40 + i, "render");
      }
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    const { app, client, jobId } = await startedJob({ generators: { weekly }, logger }, entered);

    // The lock goes; the stalled check hands the job back; this worker fetches it again.
    const a = await asAnotherWorker(app, jobId);
    await a.redis.del(a.keys.bullJobLock("weekly", jobId));
    await waitFor(
      () => lines.some((l) => l.msg === "job fetched again while its stale attempt runs here"),
      { what: "the job to be fetched again while the stale attempt runs" },
    );
    stale.resolve();

    const job = await waitForEnd(client, jobId, { timeoutMs: 20_000, what: "the job to end" });
    expect(JobState[job.state], job.failureReason).toBe("SUCCEEDED");
    const { events } = await state(a.redis, a.keys, jobId);
    expect(events.filter((e) => e.type === "succeeded")).toHaveLength(1);
    expect(weekly.calls).toEqual([1, 1]);
  });

  it("aborts the generator with the lost-attempt reason when one of its progress writes is refused", async () => {
    let firstSignal: AbortSignal | undefined;
    let refusedWrite: unknown;
    let nextProgress: unknown;
    const gate = deferred();
    const entered = deferred();
    const weekly = scripted(async (_input, progress, signal) => {
      await progress(30, "fetch-data");
      if (firstSignal === undefined) {
        firstSignal = signal;
        entered.resolve();
        await gate.promise;
        // Resolves once sent: the refusal comes back through the signal.
        refusedWrite = await progress(60, "render").then(
          () => "sent",
          (err: unknown) => err,
        );
        await aborted(signal);
        try {
          await progress(70, "render");
        } catch (err) {
          nextProgress = err;
          throw err;
        }
      }
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    const { app, client, jobId } = await startedJob({ generators: { weekly }, logger }, entered);

    // Another attempt's token in the record, the lock untouched: only the record fences.
    const a = await asAnotherWorker(app, jobId);
    await a.redis.hset(a.keys.job(jobId), recordField.attemptToken, "someone-else");
    const before = await state(a.redis, a.keys, jobId);
    gate.resolve();
    await waitFor(() => firstSignal?.aborted, { what: "the generator's signal to abort" });
    expect(refusedWrite).toBe("sent");
    expect(firstSignal?.reason).toBe(lockLostReason);
    await waitFor(() => nextProgress !== undefined, { what: "the next progress call to reject" });
    expect(nextProgress).toBe(lockLostReason);
    await waitFor(() => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"), {
      what: "the attempt to end as lost",
    });
    expect(lines.find((l) => l.msg === "attempt lost its job; it changes nothing")).toMatchObject({
      step: "progress",
      fenced: "token",
    });
    expect(await state(a.redis, a.keys, jobId)).toEqual(before);
    const job = await waitForEnd(client, jobId, {
      timeoutMs: 15_000,
      what: "the job to run again once the lost attempt's lock expired",
    });
    expect(job.progress).toBe(100);
    const after = await state(a.redis, a.keys, jobId);
    expect(after.events.slice(0, before.events.length)).toEqual(before.events);
    // The refused progress (60, render) of the lost attempt is nowhere.
    expect(after.events.some((e) => e.phase === "render" && e.progress === 60)).toBe(false);
  });

  it("stores and publishes nothing when a progress write was refused and the generator returned before its answer", async () => {
    const gate = deferred();
    const entered = deferred();
    let first = true;
    // The first attempt returns its report right after the write that will be refused.
    const weekly = scripted(async (_input, progress) => {
      await progress(30, "fetch-data");
      if (!first) return csvOutput;
      first = false;
      entered.resolve();
      await gate.promise;
      // Longer than PROGRESS_LINGER_MS (10) since the attempt's last write:
      // this report is written at once, not held for the SUCCEEDED write.
      await new Promise((resolve) => setTimeout(resolve, 30));
      await progress(60, "render");
      return { fileName: "stale.csv", contentType: "text/csv", content: "stale\n" };
    });
    const { logger, lines } = capturedLogger();
    const { app, client, jobId } = await startedJob({ generators: { weekly }, logger }, entered);

    // Every report file created in the deployment's folder from now on.
    const dir = deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix);
    mkdirSync(dir, { recursive: true });
    const created = new Set<string>();
    const watcher = watch(dir, (_event, name) => {
      if (name?.startsWith(`${jobId}@`)) created.add(name);
    });
    try {
      const a = await asAnotherWorker(app, jobId);
      await a.redis.hset(a.keys.job(jobId), recordField.attemptToken, "someone-else");
      const before = await state(a.redis, a.keys, jobId);
      gate.resolve();
      await waitFor(() => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"), {
        what: "the attempt to end as lost",
      });
      // It learnt of the refusal from the progress write's answer, before storing
      // its report or sending SUCCEEDED (which the fencing would refuse too).
      expect(lines.find((l) => l.msg === "attempt lost its job; it changes nothing")).toMatchObject(
        {
          step: "progress",
          fenced: "token",
        },
      );
      expect(await state(a.redis, a.keys, jobId)).toEqual(before);

      const job = await waitForEnd(client, jobId, {
        timeoutMs: 15_000,
        what: "the job to run again once the lost attempt's lock expired",
      });
      expect(JobState[job.state]).toBe("SUCCEEDED");
      const res = await fetch(job.result?.downloadUrl ?? "");
      expect(await res.text()).not.toBe("stale\n");
      expect(weekly.calls).toEqual([1, 1]);
      const files = await reportFilesOf(dir, jobId);
      expect(files).toHaveLength(1);
      // The lost attempt never created its file: the one created is the re-run's.
      await waitFor(() => created.size > 0, { what: "the re-run's file to be seen created" });
      expect([...created]).toEqual(files);
    } finally {
      watcher.close();
    }
  });

  it("aborts the generator once its lock was not renewed for a lock duration, even with Redis frozen", async () => {
    const server = await startRedisServer();
    try {
      let signal: AbortSignal | undefined;
      const entered = deferred();
      const weekly = scripted(async (_input, progress, s) => {
        await progress(30, "fetch-data");
        signal = s;
        entered.resolve();
        await aborted(s);
        s.throwIfAborted();
        return csvOutput;
      });
      t = await startTestApp({ REDIS_URL: server.url }, { generators: { weekly } });
      await reportClient("grpc", t.url).submitReport({
        userId: "u1",
        reportType: ReportType.WEEKLY,
      });
      await entered.promise;
      // No renewal can succeed or fail: only the worker's own clock can tell the lock is gone.
      server.pause();
      const frozenAt = Date.now();
      try {
        await waitFor(() => signal?.aborted, {
          timeoutMs: 6000,
          what: "the generator's signal to abort",
        });
        expect(signal?.reason).toBe(lockLostReason);
        // Not before the lock (2 s in test apps) could have expired.
        expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(1500);
      } finally {
        server.resume();
      }
    } finally {
      await t?.close();
      t = undefined;
      await server.stop();
    }
  });
});
