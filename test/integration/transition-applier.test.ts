/**
 * createTransitionApplier() on a real Redis: a transition writes the record,
 * the log, the channel, the finished index and the retention in one step; a
 * refused one (wrong state, a lost BullMQ lock, or a stale attempt's token)
 * changes none of them.
 */
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import type { JobView } from "../../src/domain/job.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { decodeRecord, encodeNewRecord, recordField } from "../../src/queue/job-record.js";
import { createKeys, type Keys } from "../../src/queue/keys.js";
import {
  createTransitionApplier,
  type TransitionApplier,
} from "../../src/queue/transition-applier.js";
import { openSubscriber } from "../helpers/subscriber.js";
import { testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const artifact = { downloadPath: "/v1/artifacts/j/r.csv", contentType: "text/csv", sizeBytes: 3 };

describe("createTransitionApplier()", () => {
  let redis: Redis;
  let subscriber: Redis;
  let keys: Keys;
  let transitions: TransitionApplier;
  let job: JobView;
  let counter = 0;

  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
    subscriber = openSubscriber(inject("redisUrl"));
  });
  afterAll(() => {
    redis.disconnect();
    subscriber.disconnect();
  });
  beforeEach(async () => {
    keys = createKeys(testPrefix());
    transitions = createTransitionApplier({
      redis,
      keys,
      settings: { eventStreamMaxLen: 100, succeededMs: 60_000, failedMs: 90_000 },
      logger: pino({ level: "silent" }),
    });
    job = {
      id: `job-${++counter}`,
      tenant: "t1",
      userId: "u1",
      reportType: "weekly",
      state: "queued",
      progress: 0,
      phase: "",
      attemptsMade: 0,
      maxAttempts: 3,
      failureReason: "",
      createdAt: 1_000,
      filters: {},
      priority: "normal",
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
    };
    await redis.hset(keys.job(job.id), ...encodeNewRecord(job, "fp"));
  });

  /** Gives the job's BullMQ lock to the fetch with `lockToken`, as BullMQ's moveToActive does. */
  async function lock(lockToken: string) {
    await redis.set(keys.bullJobLock(job.reportType, job.id), lockToken, "PX", 60_000);
  }

  /** Everything a transition may touch. */
  async function snapshot() {
    return {
      record: await redis.hgetall(keys.job(job.id)),
      events: await redis.xrange(keys.events(job.id), "-", "+"),
      ttl: [await redis.pttl(keys.job(job.id)), await redis.pttl(keys.events(job.id))],
      succeeded: await redis.zrange(keys.finished("succeeded"), 0, -1, "WITHSCORES"),
      failed: await redis.zrange(keys.finished("failed"), 0, -1, "WITHSCORES"),
      live: await redis.zrange(keys.live, 0, -1, "WITHSCORES"),
    };
  }

  /** Messages published on the job's channel (sharded pub/sub: SPUBLISH), from now on. */
  async function listen() {
    const messages: string[] = [];
    const channel = keys.eventChannel(job.id);
    subscriber.on("smessage", (ch: string, m: string) => {
      if (ch === channel) messages.push(m);
    });
    await subscriber.ssubscribe(channel);
    return messages;
  }

  it("writes the record, the event (with the run's trace id), the channel, the index and the retention at once", async () => {
    const messages = await listen();
    await lock("LA");
    const started = await transitions.apply(job, "started", {
      attempt: 1,
      at: 2_000,
      token: "A",
      lockToken: "LA",
      maxAttempts: 3,
    });
    expect(started).toEqual({ applied: true, eventId: expect.any(String) });
    const done = await transitions.apply(job, "succeeded", {
      attempt: 1,
      at: 3_000,
      token: "A",
      lockToken: "LA",
      startedAt: 2_000,
      artifact,
    });
    expect(done.applied).toBe(true);

    const s = await snapshot();
    expect(decodeRecord(s.record)).toMatchObject({
      state: "succeeded",
      progress: 100,
      attemptsMade: 1,
      startedAt: 2_000,
      finishedAt: 3_000,
      result: artifact,
    });
    expect(s.record[recordField.attemptToken]).toBe("A");
    expect(s.events.map(([id, f]) => decodeEvent(id, f))).toMatchObject([
      { type: "started", state: "running", attempt: 1, time: 2_000, traceId },
      { type: "succeeded", state: "succeeded", result: artifact, traceId },
    ]);
    for (const ttl of s.ttl) expect(ttl).toBeGreaterThan(50_000);
    expect(s.succeeded).toEqual([job.id, "3000"]);
    await waitFor(() => messages.length === 2, { what: "two published events" });
    expect(messages.map((m) => (JSON.parse(m) as [string])[0])).toEqual(s.events.map(([id]) => id));
  });

  it("refuses a transition from a state it does not leave, changing nothing", async () => {
    const before = await snapshot();
    const progress = {
      attempt: 1,
      at: 2_000,
      token: "A",
      lockToken: "LA",
      progress: 40,
      phase: "x",
    };
    expect(await transitions.apply(job, "progress", progress)).toEqual({
      applied: false,
      state: "queued",
      fenced: false,
    });
    expect(await transitions.apply(job, "requeued", { at: 2_000, traceparent: "" })).toEqual({
      applied: false,
      state: "queued",
      fenced: false,
    });
    expect(await snapshot()).toEqual(before);
    expect(await transitions.apply({ ...job, id: "no-such-job" }, "progress", progress)).toEqual({
      applied: false,
      state: undefined,
      fenced: false,
    });
  });

  /** Every write attempt `a` can make after its STARTED, at time 4,000. */
  function laterWrites(a: { attempt: number; token: string; lockToken: string }) {
    const where = { progress: 50, phase: "render" };
    return [
      transitions.apply(job, "progress", { ...a, ...where, at: 4_000 }),
      transitions.apply(job, "succeeded", { ...a, at: 4_000, startedAt: 2_000, artifact }),
      transitions.apply(job, "retrying", {
        ...a,
        ...where,
        at: 4_000,
        reason: "x",
        nextAttemptAt: 5_000,
      }),
      transitions.apply(job, "failed", { ...a, ...where, at: 4_000, reason: "x" }),
      transitions.apply(job, "cancelled", { ...a, ...where, at: 4_000, reason: "x" }),
      transitions.apply(job, "released", { ...a, at: 4_000 }),
      transitions.apply(job, "throttled", { ...a, at: 4_000, reason: "x", retryAfterMs: 10 }),
    ];
  }

  it("refuses every write of an attempt whose lock expired, before any other attempt started, changing nothing", async () => {
    const a = { attempt: 1, token: "A", lockToken: "LA" };
    const lockKey = keys.bullJobLock(job.reportType, job.id);
    await redis.set(lockKey, "LA", "PX", 300);
    const started = await transitions.apply(job, "started", { ...a, at: 2_000, maxAttempts: 3 });
    expect(started.applied).toBe(true);
    // The worker froze: its lock expires while the record still holds its token.
    await waitFor(async () => (await redis.exists(lockKey)) === 0, { what: "the lock to expire" });
    const before = await snapshot();
    expect(before.record[recordField.attemptToken]).toBe("A");
    const messages = await listen();
    const refused = { applied: false, state: "running", fenced: "lock" };
    for (const result of await Promise.all(laterWrites(a))) expect(result).toEqual(refused);
    expect(await transitions.apply(job, "started", { ...a, at: 4_000, maxAttempts: 3 })).toEqual(
      refused,
    );
    expect(await snapshot()).toEqual(before);

    // Another fetch holds the lock now: A stays refused, before and after B's STARTED.
    await lock("LB");
    for (const result of await Promise.all(laterWrites(a))) expect(result).toEqual(refused);
    expect(await snapshot()).toEqual(before);
    const b = { attempt: 2, token: "B", lockToken: "LB" };
    expect(
      (await transitions.apply(job, "started", { ...b, at: 3_000, maxAttempts: 3 })).applied,
    ).toBe(true);
    for (const result of await Promise.all(laterWrites(a))) expect(result).toEqual(refused);
    await waitFor(() => messages.length > 0, { what: "B's STARTED to be published" });
    expect(messages).toHaveLength(1);
  });

  it("refuses every write of a stale attempt once another attempt started, whatever the lock says, changing nothing", async () => {
    // The two fences are independent: with the lock token matching, the record's token decides.
    const a = { attempt: 1, token: "A", lockToken: "L" };
    const b = { attempt: 2, token: "B", lockToken: "L" };
    await lock("L");
    await transitions.apply(job, "started", { ...a, at: 2_000, maxAttempts: 3 });
    // Attempt A loses its job; attempt B takes it over.
    await transitions.apply(job, "started", { ...b, at: 3_000, maxAttempts: 3 });
    const before = await snapshot();
    const messages = await listen();
    for (const result of await Promise.all(laterWrites(a))) {
      expect(result).toEqual({ applied: false, state: "running", fenced: "token" });
    }
    expect(await snapshot()).toEqual(before);

    const where = { progress: 50, phase: "render" };
    // The attempt holding the job still writes; the first message is its own.
    const own = await transitions.apply(job, "progress", { ...b, ...where, at: 4_500 });
    expect(own.applied).toBe(true);
    await waitFor(() => messages.length > 0, { what: "a published event" });
    expect(messages).toHaveLength(1);
    expect(JSON.parse(messages[0] as string)[0]).toBe(own.applied && own.eventId);
    const done = await transitions.apply(job, "succeeded", {
      ...b,
      at: 5_000,
      startedAt: 3_000,
      artifact,
    });
    expect(done.applied).toBe(true);
    expect(decodeRecord(await redis.hgetall(keys.job(job.id)))?.attemptsMade).toBe(2);
  });

  it("lets transitions outside an attempt through whatever the lock and the record's token are", async () => {
    await lock("LA");
    const a = { attempt: 1, token: "A", lockToken: "LA" };
    await transitions.apply(job, "started", { ...a, at: 2_000, maxAttempts: 3 });
    await redis.del(keys.bullJobLock(job.reportType, job.id));
    const failed = await transitions.apply(job, "abandoned", {
      attempt: 1,
      at: 3_000,
      progress: 5,
      phase: "started",
      reason: "the worker running the job stopped responding too many times",
    });
    expect(failed.applied).toBe(true);
    expect((await snapshot()).failed).toEqual([job.id, "3000"]);
    // RetryJob: live again (no TTL, out of the finished index), and no earlier attempt holds it.
    const requeued = await transitions.apply(job, "requeued", {
      at: 4_000,
      traceparent: job.traceparent ?? "",
    });
    expect(requeued.applied).toBe(true);
    const s = await snapshot();
    expect(s.ttl).toEqual([-1, -1]);
    expect(s.failed).toEqual([]);
    expect(s.record[recordField.attemptToken]).toBe("");
    await lock("LA");
    const stale = await transitions.apply(job, "failed", {
      ...a,
      at: 5_000,
      progress: 5,
      phase: "started",
      reason: "late",
    });
    expect(stale.applied).toBe(false);
  });

  it("keeps a live job in the index of live jobs, scored by its latest transition, until it ends", async () => {
    await lock("LA");
    const a = { attempt: 1, token: "A", lockToken: "LA" };
    await transitions.apply(job, "started", { ...a, at: 2_000, maxAttempts: 3 });
    expect((await snapshot()).live).toEqual([job.id, "2000"]);
    await transitions.apply(job, "progress", { ...a, at: 2_500, progress: 40, phase: "x" });
    expect((await snapshot()).live).toEqual([job.id, "2500"]);
    await transitions.apply(job, "failed", {
      ...a,
      at: 3_000,
      progress: 40,
      phase: "x",
      reason: "r",
    });
    expect((await snapshot()).live).toEqual([]);
    await transitions.apply(job, "requeued", { at: 4_000, traceparent: "" });
    expect((await snapshot()).live).toEqual([job.id, "4000"]);
  });

  it("gives each event the trace id of the record as written: a re-run's own, or none", async () => {
    const rerun = "0af7651916cd43dd8448eb211c80319c";
    await transitions.apply(job, "abandoned", {
      attempt: 1,
      at: 2_000,
      progress: 0,
      phase: "",
      reason: "r",
    });
    await transitions.apply(job, "requeued", {
      at: 3_000,
      traceparent: `00-${rerun}-b7ad6b7169203331-01`,
    });
    await lock("LB");
    const b = { attempt: 1, token: "B", lockToken: "LB" };
    await transitions.apply(job, "started", { ...b, at: 4_000, maxAttempts: 3 });
    await transitions.apply(job, "failed", {
      ...b,
      at: 5_000,
      progress: 5,
      phase: "x",
      reason: "r",
    });
    // RetryJob without a trace (no SDK): the new run's events carry none.
    await transitions.apply(job, "requeued", { at: 6_000, traceparent: "" });
    const events = (await redis.xrange(keys.events(job.id), "-", "+")).map(([id, fields]) =>
      decodeEvent(id, fields),
    );
    expect(events.map((e) => [e.type, e.time, e.traceId])).toEqual([
      ["failed", 2_000, traceId],
      ["queued", 3_000, rerun],
      ["started", 4_000, rerun],
      ["failed", 5_000, rerun],
      ["queued", 6_000, undefined],
    ]);
  });

  it("returns the record as written when asked, from the fields that name the keys alone", async () => {
    const idem = keys.idempotency(job.tenant, "digest-1");
    await redis.hset(keys.job(job.id), recordField.idempotencyKeyDigest, "digest-1");
    await redis.hset(idem, "job", job.id, "fp", "fp", "until", String(1_000 + 30_000));
    await lock("LA");
    const a = { attempt: 1, token: "A", lockToken: "LA" };
    // STARTED leaves the idempotency record alone: it need not be named.
    const subject = { id: job.id, tenant: job.tenant, reportType: job.reportType, createdAt: 0 };
    const started = await transitions.apply(
      subject,
      "started",
      { ...a, at: 2_000, maxAttempts: 3 },
      { withRecord: true },
    );
    expect(started).toMatchObject({ applied: true });
    expect(started.applied && started.record).toEqual(
      decodeRecord(await redis.hgetall(keys.job(job.id))),
    );
    expect(started.applied && started.record).toMatchObject({
      state: "running",
      createdAt: 1_000,
      idempotencyKeyDigest: "digest-1",
      attemptsMade: 1,
    });
    expect(await redis.pttl(idem)).toBe(-1);
    // Without the option, no record comes back.
    const progress = await transitions.apply(
      { ...job, idempotencyKeyDigest: "digest-1" },
      "progress",
      { ...a, at: 2_500, progress: 40, phase: "x" },
    );
    expect(progress).toEqual({ applied: true, eventId: expect.any(String) });
  });

  it("sets the idempotency record's retention with the job's, never shorter than its own", async () => {
    const idem = keys.idempotency(job.tenant, "digest-1");
    const keyed = { ...job, idempotencyKeyDigest: "digest-1" };
    await redis.hset(keys.job(job.id), recordField.idempotencyKeyDigest, "digest-1");
    await redis.hset(idem, "job", job.id, "fp", "fp", "until", String(1_000 + 30_000));
    await lock("LA");
    // A keyed job's transitions that set its retention must name its idempotency record.
    await expect(
      transitions.apply(job, "abandoned", {
        attempt: 0,
        progress: 0,
        phase: "",
        at: 2_000,
        reason: "r",
      }),
    ).rejects.toThrow(/idempotency record/);
    expect(decodeRecord(await redis.hgetall(keys.job(job.id)))?.state).toBe("queued");
    expect(await redis.pttl(idem)).toBe(-1);

    const a = { attempt: 1, token: "A", lockToken: "LA" };
    await transitions.apply(keyed, "started", { ...a, at: 2_000, maxAttempts: 3 });
    expect(await redis.pttl(idem)).toBe(-1);
    // Failed retention (90 s) beats `until` (31 s after the epoch's 1 s here).
    await transitions.apply(keyed, "failed", {
      ...a,
      at: 3_000,
      progress: 5,
      phase: "x",
      reason: "r",
    });
    expect(await redis.pttl(idem)).toBeGreaterThan(89_000);
    await transitions.apply(keyed, "requeued", { at: 4_000, traceparent: "" });
    expect(await redis.pttl(idem)).toBe(-1);
    // `until` beats the job's retention when it is later.
    await redis.hset(idem, "until", String(5_000 + 200_000));
    await transitions.apply(keyed, "abandoned", {
      attempt: 0,
      at: 5_000,
      progress: 0,
      phase: "",
      reason: "r",
    });
    expect(await redis.pttl(idem)).toBeGreaterThan(199_000);
    // Another job's record under the key is left alone.
    await redis.hset(idem, "job", "another-job");
    await redis.persist(idem);
    await transitions.apply(keyed, "requeued", { at: 6_000, traceparent: "" });
    await transitions.apply(keyed, "abandoned", {
      attempt: 0,
      at: 7_000,
      progress: 0,
      phase: "",
      reason: "r",
    });
    expect(await redis.pttl(idem)).toBe(-1);
  });
});
