/**
 * An attempt whose SUCCEEDED write is refused (its lock was taken, or its job
 * ended meanwhile) after it stored its report: it changes nothing, neither our
 * record nor BullMQ's job, which is left to BullMQ and whoever holds it, and
 * removes its own file. (Written for the SUCCEEDED write folded into BullMQ's
 * completion of the job, tried and not kept: docs/performance.md; a fold that
 * completes BullMQ's job before its checks fails them.) And the same when the
 * attempt's held progress reports travel in that SUCCEEDED write: none of
 * them is written or published; and when the attempt's held STARTED
 * travels in it too (the attempt ended before its linger was over).
 */
import path from "node:path";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import type { AppOptions } from "../../src/app.js";
import { deploymentArtifactDir } from "../../src/domain/artifact-paths.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createJobReader } from "../../src/queue/job-reader.js";
import { recordField } from "../../src/queue/job-record.js";
import { createKeys } from "../../src/queue/keys.js";
import { asAnotherWorker } from "../helpers/another-worker.js";
import { filesUnder } from "../helpers/artifact-files.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, scripted } from "../helpers/generators.js";
import { getJob, waitForEnd } from "../helpers/rpc.js";
import { openSubscriber } from "../helpers/subscriber.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("an attempt whose SUCCEEDED write is refused", () => {
  let t: TestApp | undefined;
  const clients: Redis[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await t?.close();
    t = undefined;
  });

  function connect(app: TestApp): Redis {
    const redis = new Redis(app.config.redis.url);
    clients.push(redis);
    return redis;
  }

  /** Ends the job's record CANCELLED with the running attempt's own tokens, behind its back. */
  async function cancelBehindAttempt(
    app: TestApp,
    jobId: string,
    progress: number,
    phase: string,
  ): Promise<void> {
    const redis = connect(app);
    const { keys, job, transitions } = await asAnotherWorker(app, redis, jobId);
    const token = await redis.hget(keys.job(jobId), recordField.attemptToken);
    const lockToken = await redis.get(keys.bullJobLock("weekly", jobId));
    const r = await transitions.apply(job, "cancelled", {
      attempt: 1,
      token: token ?? "",
      lockToken: lockToken ?? "",
      progress,
      phase,
      at: Date.now(),
      reason: "cancelled meanwhile",
    });
    expect(r.applied).toBe(true);
  }

  /**
   * Starts `t` with `options`, submits a weekly job whose generator calls
   * `beforeReturn` (with the job id) before returning its report, and waits
   * for the attempt to end as lost (or, `ends` "skipped", for BullMQ to
   * complete the job: an attempt whose held STARTED was refused by the job's
   * state never had the job).
   */
  async function refusedAtSucceeded(
    options: AppOptions,
    beforeReturn: (app: TestApp, jobId: string) => Promise<void>,
    env: Record<string, string> = {},
    reports: "written" | "held" | "held with STARTED" = "written",
    ends: "lost" | "skipped" = "lost",
  ) {
    let app!: TestApp;
    const weekly = scripted(async (input, progress) => {
      if (reports === "held") {
        // STARTED went alone once the linger was over; reports right after
        // it are held (the linger outlasts the rest of the job): both travel
        // with SUCCEEDED.
        await waitFor(
          async () =>
            (await getJob(reportClient("grpc", app.url), input.jobId)).state === JobState.RUNNING,
          { what: "the STARTED write to be applied" },
        );
      }
      await progress(50, "render");
      if (reports !== "written") {
        // Held with the first (and with STARTED, when that is still held).
        await progress(60, "render");
      } else {
        // Written first (a report right after STARTED is held up to
        // PROGRESS_LINGER_MS): the SUCCEEDED write alone is refused here.
        await waitFor(
          async () => (await getJob(reportClient("grpc", app.url), input.jobId)).progress === 50,
          { what: "the progress write to be applied" },
        );
      }
      await beforeReturn(app, input.jobId);
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    app = await startTestApp(env, { generators: { weekly }, logger, ...options });
    t = app;
    const client = reportClient("grpc", app.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    if (ends === "lost") {
      await waitFor(() => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"), {
        what: "the attempt to end as lost",
      });
    } else {
      const keys = createKeys(app.config.redis.prefix);
      const bullJobKey = keys.bullJobLock("weekly", jobId).slice(0, -":lock".length);
      const redis = connect(app);
      await waitFor(async () => (await redis.hget(bullJobKey, "finishedOn")) !== null, {
        what: "BullMQ to complete the skipped job",
      });
    }
    const lost = lines.find((l) => l.msg === "attempt lost its job; it changes nothing");
    const jobDir = path.join(
      deploymentArtifactDir(app.config.worker.artifactDir, app.config.redis.prefix),
      jobId,
    );
    return { app, client, jobId, lost, jobDir, weekly };
  }

  it("changes neither the record nor BullMQ's job when the lock was taken before SUCCEEDED", async () => {
    const { app, jobId, lost, jobDir } = await refusedAtSucceeded(
      // A long lock, renewed every 3.75 s: the attempt learns of the other
      // fetch from its refused SUCCEEDED, before a renewal could tell it.
      { lockDurationMs: 30_000 },
      async (app, jobId) => {
        // Another fetch holds the job now (its lock token in BullMQ's lock).
        const keys = createKeys(app.config.redis.prefix);
        await connect(app).set(keys.bullJobLock("weekly", jobId), "fetch-B", "PX", 60_000);
      },
    );
    expect(lost).toMatchObject({ step: "succeeded", fenced: "lock", state: "running" });
    const redis = connect(app);
    const keys = createKeys(app.config.redis.prefix);
    const bullJobKey = keys.bullJobLock("weekly", jobId).slice(0, -":lock".length);
    // BullMQ's job is as the other fetch holds it: active, locked by it, not finished.
    expect(await redis.get(`${bullJobKey}:lock`)).toBe("fetch-B");
    expect(await redis.hget(bullJobKey, "finishedOn")).toBe(null);
    expect(await redis.lrange(`${bullJobKey.slice(0, -jobId.length)}active`, 0, -1)).toContain(
      jobId,
    );
    const record = await createJobReader({ redis, keys }).get(jobId);
    expect(record?.state).toBe("running");
    expect(record?.result).toBeUndefined();
    const events = (await redis.xrange(keys.events(jobId), "-", "+")).map(([id, f]) =>
      decodeEvent(id, f),
    );
    expect(events.map((e) => e.type)).toEqual(["queued", "started", "progress"]);
    // The attempt's own file went with it.
    expect(await filesUnder(jobDir)).toEqual([]);
  });

  it("leaves a job whose record was cancelled meanwhile CANCELLED, and does not complete it in BullMQ", async () => {
    const { app, client, jobId, lost, jobDir } = await refusedAtSucceeded(
      // A long lock: nothing but the refused SUCCEEDED ends the attempt.
      { lockDurationMs: 30_000 },
      // The job's record ends CANCELLED behind the attempt's back (its
      // signal never told it): written with the attempt's own tokens.
      (app, jobId) => cancelBehindAttempt(app, jobId, 50, "render"),
    );
    expect(lost).toMatchObject({ step: "succeeded", fenced: false, state: "cancelled" });
    const redis = connect(app);
    const keys = createKeys(app.config.redis.prefix);
    const bullJobKey = keys.bullJobLock("weekly", jobId).slice(0, -":lock".length);
    // Left to BullMQ: still active and locked by the attempt's fetch, not completed by it.
    expect(await redis.hget(bullJobKey, "finishedOn")).toBe(null);
    expect(await redis.exists(`${bullJobKey}:lock`)).toBe(1);
    const job = await waitForEnd(client, jobId, { what: "the job to show its end" });
    expect(JobState[job.state]).toBe("CANCELLED");
    const events = (await redis.xrange(keys.events(jobId), "-", "+")).map(([id, f]) =>
      decodeEvent(id, f),
    );
    expect(events.map((e) => e.type)).toEqual(["queued", "started", "progress", "cancelled"]);
    expect(await filesUnder(jobDir)).toEqual([]);
  });
  describe("with the attempt's held progress reports in it (PROGRESS_LINGER_MS)", () => {
    /**
     * A weekly job whose generator reports twice (held: the linger outlasts
     * the job), lets `arrange` act behind its back, then returns: the held
     * reports travel in the SUCCEEDED write, which is refused. Returns what
     * Redis held after `arrange` and after the attempt ended, and what was
     * published on the job's channel in between.
     */
    async function refusedWithReports(
      arrange: (app: TestApp, jobId: string) => Promise<void>,
      reports: "held" | "held with STARTED" = "held",
      ends: "lost" | "skipped" = "lost",
    ) {
      const redis = (app: TestApp) => connect(app);
      let seen: { before: unknown; messages: string[]; channel: string; sub: Redis } | undefined;
      const snapshot = async (r: Redis, app: TestApp, jobId: string) => {
        const keys = createKeys(app.config.redis.prefix);
        return {
          record: await r.hgetall(keys.job(jobId)),
          entries: await r.xrange(keys.events(jobId), "-", "+"),
          live: await r.zscore(keys.live, jobId),
          succeeded: await r.zscore(keys.finished("succeeded"), jobId),
          // When they expire (absolute: a TTL shrinks meanwhile).
          expiry: [
            await r.call("PEXPIRETIME", keys.job(jobId)),
            await r.call("PEXPIRETIME", keys.events(jobId)),
          ],
        };
      };
      const { app, jobId, lost, jobDir } = await refusedAtSucceeded(
        { lockDurationMs: 30_000 },
        async (app, jobId) => {
          await arrange(app, jobId);
          // From here on nothing may change, and nothing may be published.
          const sub = openSubscriber(app.config.redis.url);
          clients.push(sub);
          const channel = createKeys(app.config.redis.prefix).eventChannel(jobId);
          const messages: string[] = [];
          sub.on("smessage", (ch: string, m: string) => {
            if (ch === channel) messages.push(m);
          });
          await sub.ssubscribe(channel);
          seen = { before: await snapshot(redis(app), app, jobId), messages, channel, sub };
        },
        // Held with STARTED: the linger outlasts the job. Held after it: STARTED
        // goes at 2 s, the reports right after it are held up to 2 s more.
        { PROGRESS_LINGER_MS: reports === "held" ? "2000" : "60000" },
        reports,
        ends,
      );
      if (seen === undefined) throw new Error("the generator never returned");
      const r = redis(app);
      const after = await snapshot(r, app, jobId);
      // Delivered after anything the attempt published: nothing came before it.
      await r.spublish(seen.channel, "sentinel");
      await waitFor(() => seen?.messages.includes("sentinel"), { what: "the sentinel message" });
      return { app, jobId, lost, jobDir, before: seen.before, after, published: seen.messages };
    }

    it("changes nothing, writes none of the reports and publishes nothing when the lock was taken", async () => {
      const { before, after, published, lost, jobDir } = await refusedWithReports(
        async (app, jobId) => {
          const keys = createKeys(app.config.redis.prefix);
          await connect(app).set(keys.bullJobLock("weekly", jobId), "fetch-B", "PX", 60_000);
        },
      );
      expect(lost).toMatchObject({ step: "succeeded", fenced: "lock", state: "running" });
      expect(after).toEqual(before);
      expect(published).toEqual(["sentinel"]);
      const types = (before as { entries: Array<[string, string[]]> }).entries.map(
        ([id, f]) => decodeEvent(id, f).type,
      );
      // The held reports (50, 60) were never written.
      expect(types).toEqual(["queued", "started"]);
      expect(await filesUnder(jobDir)).toEqual([]);
    });

    it("changes nothing, writes none of the reports and publishes nothing when the record was cancelled", async () => {
      const { before, after, published, lost, jobDir, app, jobId } = await refusedWithReports(
        (app, jobId) => cancelBehindAttempt(app, jobId, 5, "started"),
      );
      expect(lost).toMatchObject({ step: "succeeded", fenced: false, state: "cancelled" });
      expect(after).toEqual(before);
      expect(published).toEqual(["sentinel"]);
      const types = (before as { entries: Array<[string, string[]]> }).entries.map(
        ([id, f]) => decodeEvent(id, f).type,
      );
      expect(types).toEqual(["queued", "started", "cancelled"]);
      expect(await filesUnder(jobDir)).toEqual([]);
      const job = await waitForEnd(reportClient("grpc", app.url), jobId, {
        what: "the job to show its end",
      });
      expect(JobState[job.state]).toBe("CANCELLED");
    });

    it("with its held STARTED too: changes nothing and publishes nothing when the lock was taken", async () => {
      const { before, after, published, lost, jobDir } = await refusedWithReports(
        async (app, jobId) => {
          const keys = createKeys(app.config.redis.prefix);
          await connect(app).set(keys.bullJobLock("weekly", jobId), "fetch-B", "PX", 60_000);
        },
        "held with STARTED",
      );
      // The record never left QUEUED: the attempt's STARTED was in the refused call.
      expect(lost).toMatchObject({ step: "succeeded", fenced: "lock", state: "queued" });
      expect(after).toEqual(before);
      expect(published).toEqual(["sentinel"]);
      const types = (before as { entries: Array<[string, string[]]> }).entries.map(
        ([id, f]) => decodeEvent(id, f).type,
      );
      expect(types).toEqual(["queued"]);
      expect(await filesUnder(jobDir)).toEqual([]);
    });

    it("with its held STARTED too: a job cancelled while it ran unseen stays CANCELLED, its attempt is skipped", async () => {
      const { before, after, published, jobDir, app, jobId } = await refusedWithReports(
        // CancelJob sees a QUEUED job (its STARTED is held): CANCELLED at once,
        // BullMQ's job left to the worker that holds it.
        async (app, jobId) => {
          const cancelled = await reportClient("grpc", app.url).cancelJob({
            jobId,
            reason: "not needed",
          });
          expect(JobState[cancelled.job?.state ?? JobState.UNSPECIFIED]).toBe("CANCELLED");
        },
        "held with STARTED",
        "skipped",
      );
      expect(after).toEqual(before);
      expect(published).toEqual(["sentinel"]);
      const types = (before as { entries: Array<[string, string[]]> }).entries.map(
        ([id, f]) => decodeEvent(id, f).type,
      );
      expect(types).toEqual(["queued", "cancelled"]);
      expect(await filesUnder(jobDir)).toEqual([]);
      const job = await getJob(reportClient("grpc", app.url), jobId);
      expect(JobState[job.state]).toBe("CANCELLED");
      expect(job.failureReason).toBe("not needed");
    });
  });
});
