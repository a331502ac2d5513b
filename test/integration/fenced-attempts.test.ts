/**
 * The processor's writes are fenced by its attempt: once another attempt of
 * the job has started (another worker took it over after a lost lock), the
 * first attempt's progress and SUCCEEDED change neither the record nor the log.
 */
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createJobReader } from "../../src/queue/job-reader.js";
import { createKeys } from "../../src/queue/keys.js";
import { createTransitionApplier } from "../../src/queue/transition-applier.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { type BullQueue, bullQueue } from "../helpers/rpc.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("an attempt whose job another attempt took over", () => {
  let t: TestApp | undefined;
  let redis: Redis | undefined;
  let bull: BullQueue | undefined;
  afterEach(async () => {
    await bull?.close();
    redis?.disconnect();
    await t?.close();
    t = redis = bull = undefined;
  });

  it("changes neither the record nor the log", async () => {
    const entered = deferred();
    const gate = deferred();
    const weekly = scripted(async (_input, progress) => {
      await progress(30, "fetch-data");
      entered.resolve();
      await gate.promise;
      await progress(60, "render");
      return csvOutput;
    });
    t = await startTestApp({}, { generators: { weekly } });
    const { jobId } = await reportClient("grpc", t.url).submitReport({
      userId: "u1",
      reportType: ReportType.WEEKLY,
    });
    await entered.promise;

    // Another worker starts the job, as after a lost lock: its token holds the job now.
    redis = new Redis(t.config.redis.url);
    const keys = createKeys(t.config.redis.prefix);
    const job = await createJobReader({ redis, keys }).get(jobId);
    if (job === undefined) throw new Error("job record missing");
    const other = createTransitionApplier({
      redis,
      keys,
      settings: {
        eventStreamMaxLen: 1000,
        succeededMs: 60_000,
        failedMs: 60_000,
      },
      logger: pino({ level: "silent" }),
    });
    const takeover = await other.apply(job, "started", {
      attempt: 2,
      at: Date.now(),
      token: "the-other-worker",
      maxAttempts: 3,
    });
    expect(takeover.applied).toBe(true);
    const record = await redis.hgetall(keys.job(jobId));

    // The first attempt runs to its end: BullMQ completes it.
    gate.resolve();
    bull = bullQueue(t.config.redis.prefix, t.config.redis.url);
    const queue = bull.queue;
    await waitFor(async () => (await queue.getJobState(jobId)) === "completed", {
      what: "the first attempt to end",
    });

    expect(await redis.hgetall(keys.job(jobId))).toEqual(record);
    const events = (await redis.xrange(keys.events(jobId), "-", "+")).map(([id, f]) =>
      decodeEvent(id, f),
    );
    expect(events.map((e) => `${e.type}(${e.attempt})`)).toEqual([
      "queued(0)",
      "started(1)",
      "progress(1)",
      "started(2)",
    ]);
  });
});
