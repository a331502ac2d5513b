/**
 * Scripts run twice for one call: ioredis resends a command whose reply was
 * lost when its connection dropped, so Redis may run the very same script
 * again, maybe after a worker started the job. The second run of the submit
 * script must find the job its first run made and change nothing; a resent
 * RetryJob must answer with the job its first run re-queued.
 */
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { type ReportType, reportTypes, type SubmitInput } from "../../src/domain/job.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createRedisConnection } from "../../src/queue/connections.js";
import { createJobControl } from "../../src/queue/job-control.js";
import { createJobReader } from "../../src/queue/job-reader.js";
import { decodeRecord } from "../../src/queue/job-record.js";
import { createKeys, type Keys, queueNameFor } from "../../src/queue/keys.js";
import { createQueueTransitions } from "../../src/queue/queue-transitions.js";
import { bullJobSpec, createSubmitter, digest, type Submitter } from "../../src/queue/submitter.js";
import { createTransitionApplier } from "../../src/queue/transition-applier.js";
import { testSubmitterSettings } from "../helpers/submitter-settings.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { testPrefix } from "../helpers/test-app.js";

const logger = pino({ level: "silent" });

describe("scripts resent after a lost reply", () => {
  let redis: Redis;
  let proxy: TcpProxy;
  let viaProxy: Redis;
  const queues: Queue[] = [];

  beforeAll(async () => {
    const url = new URL(inject("redisUrl"));
    redis = new Redis(url.toString());
    proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
  });
  afterEach(async () => {
    proxy.release();
    viaProxy?.disconnect();
    for (const q of queues.splice(0)) await q.close();
  });
  afterAll(async () => {
    redis?.disconnect();
    await proxy?.close();
  });

  /** A submitter whose command connection (the app's kind: fail fast) goes through the proxy. */
  async function setup(): Promise<{
    keys: Keys;
    submitter: Submitter;
    byType: Record<ReportType, Queue>;
  }> {
    const keys = createKeys(testPrefix());
    viaProxy = createRedisConnection(proxy.url, "command", logger, "resend-test");
    await new Promise<void>((resolve) => viaProxy.once("ready", () => resolve()));
    const byType = Object.fromEntries(
      reportTypes.map((type) => {
        const q = new Queue(queueNameFor(type), { connection: redis, prefix: keys.bullPrefix });
        queues.push(q);
        return [type, q];
      }),
    ) as Record<ReportType, Queue>;
    const submitter = createSubmitter({
      redis: viaProxy,
      queues: byType,
      keys,
      settings: testSubmitterSettings({ attempts: 3 }),
    });
    // The script is cached on the server now: the call under test is one EVALSHA.
    await submitter.submit(input("warm-up"));
    return { keys, submitter, byType };
  }

  function input(tenant: string, idempotencyKey?: string): SubmitInput {
    return {
      tenant,
      idempotencyKey,
      userId: "u1",
      reportType: "weekly",
      filters: { region: "eu" },
      priority: "normal",
    };
  }

  for (const keyed of [false, true]) {
    it(`submit answers with the job its first run made and changes nothing (${keyed ? "with" : "without"} an idempotency key)`, async () => {
      const { keys, submitter } = await setup();
      const tenant = keyed ? "keyed" : "keyless";
      const lost = proxy.loseNextReply();
      const call = submitter.submit(input(tenant, keyed ? "resend-key" : undefined));
      await lost;

      // The first run went through: the job is queued. A worker starts it
      // before the resent script arrives.
      const [jobId] = await redis.zrange(keys.tenantIndex(tenant), 0, -1);
      if (jobId === undefined) throw new Error("the first run made no job");
      const job = decodeRecord(await redis.hgetall(keys.job(jobId)));
      if (job === undefined) throw new Error("no record");
      const transitions = createTransitionApplier({
        redis,
        keys,
        settings: { eventStreamMaxLen: 100, succeededMs: 60_000, failedMs: 60_000 },
        logger,
      });
      // As BullMQ's moveToActive would: the worker's fetch holds the job's lock.
      await redis.set(keys.bullJobLock(job.reportType, job.id), "lock-1", "PX", 60_000);
      const started = await transitions.apply(job, "started", {
        attempt: 1,
        at: Date.now(),
        token: "attempt-1",
        lockToken: "lock-1",
        maxAttempts: 3,
      });
      expect(started.applied).toBe(true);
      const before = {
        record: await redis.hgetall(keys.job(jobId)),
        events: await redis.xrange(keys.events(jobId), "-", "+"),
        index: await redis.zrange(keys.tenantIndex(tenant), 0, -1),
      };

      proxy.release();
      const outcome = await call;

      expect(outcome.job.id).toBe(jobId);
      expect(outcome.deduplicated).toBe(false);
      expect(await redis.hgetall(keys.job(jobId))).toEqual(before.record);
      const events = await redis.xrange(keys.events(jobId), "-", "+");
      expect(events).toEqual(before.events);
      expect(events.map(([id, f]) => decodeEvent(id, f).type)).toEqual(["queued", "started"]);
      expect(await redis.zrange(keys.tenantIndex(tenant), 0, -1)).toEqual(before.index);
      if (keyed) {
        const idem = keys.idempotency(tenant, digest("resend-key"));
        expect(await redis.hget(idem, "job")).toBe(jobId);
      }
    });
  }

  it("RetryJob, resent, answers with the job its first run re-queued", async () => {
    const { keys, submitter, byType } = await setup();
    const transitions = createTransitionApplier({
      redis,
      keys,
      settings: { eventStreamMaxLen: 100, succeededMs: 60_000, failedMs: 60_000 },
      logger,
    });
    const control = createJobControl({
      redis: viaProxy,
      keys,
      jobs: createJobReader({ redis, keys }),
      queueTransitions: createQueueTransitions({
        redis: viaProxy,
        queues: byType,
        keys,
        transitions: createTransitionApplier({
          redis: viaProxy,
          keys,
          settings: { eventStreamMaxLen: 100, succeededMs: 60_000, failedMs: 60_000 },
          logger,
        }),
      }),
      bullJob: (job) =>
        bullJobSpec(job, {
          worker: { retryBackoffMs: 1000 },
          retention: { succeededMs: 60_000, failedMs: 60_000 },
        }),
    });
    /** A job of `tenant` that failed (nothing fetched it from BullMQ). */
    const failedJob = async (tenant: string) => {
      const { job } = await submitter.submit(input(tenant));
      const failed = await transitions.apply(job, "abandoned", {
        attempt: 0,
        at: Date.now(),
        progress: 0,
        phase: "",
        reason: "broken",
      });
      expect(failed.applied).toBe(true);
      return job.id;
    };
    // The retry script is cached on the server now: the call under test is one EVALSHA.
    await control.retry("warm-up", await failedJob("warm-up"));

    const jobId = await failedJob("acme");
    const lost = proxy.loseNextReply();
    const call = control.retry("acme", jobId);
    await lost;
    expect((await decodeRecord(await redis.hgetall(keys.job(jobId))))?.state).toBe("queued");
    proxy.release();
    const job = await call;

    expect(job.id).toBe(jobId);
    expect(job.state).toBe("queued");
    const events = await redis.xrange(keys.events(jobId), "-", "+");
    expect(events.map(([id, f]) => decodeEvent(id, f).type)).toEqual([
      "queued",
      "failed",
      "queued",
    ]);
  });
});
