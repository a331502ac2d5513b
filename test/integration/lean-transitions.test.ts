/**
 * The transition applier runs an attempt's STARTED, PROGRESS and SUCCEEDED
 * through a script of their own (apply-attempt.lua: fewer arguments and
 * commands), and every other transition, and these when composed with
 * BullMQ's side (prepare), through apply-transition.lua. Both must leave
 * Redis alike: the same record, event entries, published messages, indexes,
 * backlog set and retention, and the same refusals. Each case runs the same
 * attempt on two copies of one job (two key prefixes), one through `apply`
 * (apply-attempt.lua) and one through `prepare` and apply-transition.lua, and
 * compares everything. The same for an attempt's STARTED, reports and
 * SUCCEEDED in one call (a STARTED the processor held) against one call each.
 */
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { JobView } from "../../src/domain/job.js";
import type {
  AppliedTransitionName,
  TransitionInputs,
  TransitionSubject,
} from "../../src/domain/job-transitions.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { encodeNewRecord, recordField } from "../../src/queue/job-record.js";
import { createKeys, type Keys } from "../../src/queue/keys.js";
import { loadLuaScript } from "../../src/queue/scripts/load.js";
import {
  createTransitionApplier,
  type TransitionApplier,
  type TransitionResult,
} from "../../src/queue/transition-applier.js";
import { openSubscriber } from "../helpers/subscriber.js";
import { testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const general = loadLuaScript("apply-transition");
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const artifact = {
  downloadPath: "/v1/artifacts/j/1-a/r.csv",
  contentType: "text/csv",
  sizeBytes: 3,
};

/** A progress report of attempt `own` at `at`. */
function report(own: { attempt: number; token: string; lockToken: string }, at: number) {
  return { ...own, at, progress: at % 100, phase: `p-${at}` };
}

/** One copy of the job: its keys, its applier and the messages of its channel. */
interface Copy {
  keys: Keys;
  transitions: TransitionApplier;
  messages: string[];
}

describe("apply-attempt.lua", () => {
  let redis: Redis;
  let subscriber: Redis;
  let counter = 0;

  beforeAll(() => {
    redis = new Redis(inject("redisUrl"));
    subscriber = openSubscriber(inject("redisUrl"));
  });
  afterAll(() => {
    redis.disconnect();
    subscriber.disconnect();
  });

  /** A queued job with an idempotency record, in its tenant's backlog and the live index, locked by "L". */
  async function copyOf(job: JobView, eventStreamMaxLen = 100): Promise<Copy> {
    const keys = createKeys(testPrefix());
    const transitions = createTransitionApplier({
      redis,
      keys,
      settings: { eventStreamMaxLen, succeededMs: 60_000, failedMs: 90_000 },
      logger: pino({ level: "silent" }),
    });
    const idem = keys.idempotency(job.tenant, job.idempotencyKeyDigest ?? "");
    await redis
      .multi()
      .hset(keys.job(job.id), ...encodeNewRecord(job, "fp"))
      .hset(idem, "job", job.id, "fp", "fp", "until", String(Date.now() + 600_000))
      .sadd(keys.tenantBacklog(job.tenant), job.id)
      .zadd(keys.live, job.createdAt, job.id)
      .set(keys.bullJobLock(job.reportType, job.id), "L", "PX", 60_000)
      .exec();
    const messages: string[] = [];
    const channel = keys.eventChannel(job.id);
    subscriber.on("smessage", (ch: string, m: string) => {
      if (ch === channel) messages.push(m);
    });
    await subscriber.ssubscribe(channel);
    return { keys, transitions, messages };
  }

  function newJob(): JobView {
    return {
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
      filters: { region: "eu" },
      priority: "normal",
      traceparent,
      idempotencyKeyDigest: "digest-1",
    };
  }

  /** The transition through apply-transition.lua, as `prepare` gives it. */
  async function viaGeneral<N extends AppliedTransitionName>(
    c: Copy,
    job: TransitionSubject,
    name: N,
    input: TransitionInputs[N],
    options?: { withRecord?: boolean },
  ): Promise<TransitionResult> {
    const call = c.transitions.prepare(job, name, input, options);
    return call.settle((await general.run(redis, call.keys, call.args)) as [number, string]);
  }

  /** Everything a transition may touch, with stream ids and times to live made comparable. */
  async function snapshot(c: Copy, job: JobView) {
    const { keys } = c;
    const entries = await redis.xrange(keys.events(job.id), "-", "+");
    const ids = entries.map(([id]) => id);
    const ttl = async (key: string) => {
      const ms = await redis.pttl(key);
      // Set a few ms apart in the two copies: compared to the second.
      return ms < 0 ? ms : Math.round(ms / 1000);
    };
    return {
      record: await redis.hgetall(keys.job(job.id)),
      events: entries.map(([, fields]) => fields),
      // The published message as the hub reads it, the entry id replaced by its index.
      messages: c.messages.map((m) => {
        const [id, fields] = JSON.parse(m) as [string, string[]];
        return [ids.indexOf(id), fields];
      }),
      ttl: [
        await ttl(keys.job(job.id)),
        await ttl(keys.events(job.id)),
        await ttl(keys.idempotency(job.tenant, job.idempotencyKeyDigest ?? "")),
      ],
      succeeded: await redis.zrange(keys.finished("succeeded"), 0, -1, "WITHSCORES"),
      failed: await redis.zrange(keys.finished("failed"), 0, -1, "WITHSCORES"),
      live: await redis.zrange(keys.live, 0, -1, "WITHSCORES"),
      backlog: await redis.smembers(keys.tenantBacklog(job.tenant)),
    };
  }

  it("write what apply-transition.lua writes, publish what it publishes, and return the record", async () => {
    const job = newJob();
    const [lean, gen] = [await copyOf(job), await copyOf(job)];
    /** The two copies alike after each step (each step publishes one message). */
    const alike = async (step: number) => {
      await waitFor(() => lean.messages.length === step && gen.messages.length === step);
      const x = await snapshot(lean, job);
      expect(x, `after step ${step}`).toEqual(await snapshot(gen, job));
      return x;
    };
    const own = { attempt: 1, token: "A", lockToken: "L" };
    const subject = { id: job.id, tenant: job.tenant, reportType: job.reportType, createdAt: 0 };
    const started = { ...own, at: 2_000, maxAttempts: 3 };
    const a = await lean.transitions.apply(subject, "started", started, { withRecord: true });
    const b = await viaGeneral(gen, subject, "started", started, { withRecord: true });
    expect(a).toEqual({ ...b, eventId: expect.any(String) });
    expect(a.applied && a.record).toMatchObject({
      state: "running",
      idempotencyKeyDigest: "digest-1",
    });
    expect((await alike(1)).live).toEqual([job.id, "2000"]);
    const record = (a.applied && a.record) || job;
    // A phase that JSON must escape, non-ASCII text, and a lone surrogate
    // (stored as U+FFFD: the live event must say what the replay says).
    const phases = ["fetch-data", 'ré"nder\\ \n✓ \ud800 end'];
    for (const [i, phase] of phases.entries()) {
      const input = { ...own, at: 3_000 + i, progress: 40 + i, phase };
      const p = await lean.transitions.apply(record, "progress", input);
      expect(p).toEqual({
        ...(await viaGeneral(gen, record, "progress", input)),
        eventId: expect.any(String),
      });
      expect((await alike(2 + i)).live).toEqual([job.id, String(3_000 + i)]);
    }
    const succeeded = { ...own, at: 4_000, startedAt: 2_000, artifact };
    const s = await lean.transitions.apply(record, "succeeded", succeeded);
    expect(s).toEqual({
      ...(await viaGeneral(gen, record, "succeeded", succeeded)),
      eventId: expect.any(String),
    });
    const x = await alike(4);
    // And what that is: the whole attempt, its end and its retention.
    expect(x.record[recordField.state]).toBe("succeeded");
    expect(x.events.map((f) => decodeEvent("0-1", f).type)).toEqual([
      "started",
      "progress",
      "progress",
      "succeeded",
    ]);
    expect(x.messages.map(([i]) => i)).toEqual([0, 1, 2, 3]);
    expect(x.messages.map(([, f]) => f)).toEqual(x.events);
    expect(decodeEvent("0-1", x.events[2] ?? []).phase).toBe('ré"nder\\ \n✓ \ufffd end');
    expect(x.ttl).toEqual([60, 60, expect.any(Number)]);
    expect(x.succeeded).toEqual([job.id, "4000"]);
    expect(x.live).toEqual([]);
    expect(x.backlog).toEqual([]);
  });

  it("refuse what apply-transition.lua refuses, changing nothing", async () => {
    const job = newJob();
    const [lean, gen] = [await copyOf(job), await copyOf(job)];
    const own = { attempt: 1, token: "A", lockToken: "L" };
    const cases: Array<
      [string, (c: Copy) => Promise<unknown>, (c: Copy) => Promise<TransitionResult[]>]
    > = [
      [
        "a lost lock",
        (c) => redis.set(c.keys.bullJobLock(job.reportType, job.id), "other"),
        async (c) => [
          await run(c, "started", { ...own, at: 2_000, maxAttempts: 3 }),
          await run(c, "progress", { ...own, at: 2_100, progress: 40, phase: "x" }),
          await run(c, "succeeded", { ...own, at: 2_200, startedAt: 2_000, artifact }),
        ],
      ],
      [
        "another attempt's token",
        async (c) => {
          await redis.set(c.keys.bullJobLock(job.reportType, job.id), "L");
          await redis.hset(
            c.keys.job(job.id),
            recordField.state,
            "running",
            recordField.attemptToken,
            "B",
          );
        },
        async (c) => [
          await run(c, "progress", { ...own, at: 2_100, progress: 40, phase: "x" }),
          await run(c, "succeeded", { ...own, at: 2_200, startedAt: 2_000, artifact }),
        ],
      ],
      [
        "a finished job",
        (c) =>
          redis.hset(
            c.keys.job(job.id),
            recordField.state,
            "cancelled",
            recordField.attemptToken,
            "A",
          ),
        async (c) => [
          await run(c, "started", { ...own, at: 2_000, maxAttempts: 3 }),
          await run(c, "progress", { ...own, at: 2_100, progress: 40, phase: "x" }),
          await run(c, "succeeded", { ...own, at: 2_200, startedAt: 2_000, artifact }),
        ],
      ],
      [
        "no record",
        (c) => redis.del(c.keys.job(job.id)),
        async (c) => [
          await run(c, "started", { ...own, at: 2_000, maxAttempts: 3 }),
          await run(c, "progress", { ...own, at: 2_100, progress: 40, phase: "x" }),
          await run(c, "succeeded", { ...own, at: 2_200, startedAt: 2_000, artifact }),
        ],
      ],
    ];
    let run: <N extends AppliedTransitionName>(
      c: Copy,
      name: N,
      input: TransitionInputs[N],
    ) => Promise<TransitionResult>;
    for (const [what, arrange, act] of cases) {
      for (const c of [lean, gen]) await arrange(c);
      const before = [await snapshot(lean, job), await snapshot(gen, job)];
      run = (c, name, input) => c.transitions.apply(job, name, input);
      const refusedLean = await act(lean);
      run = (c, name, input) => viaGeneral(c, job, name, input);
      const refusedGen = await act(gen);
      expect(refusedLean, what).toEqual(refusedGen);
      // Progress reports together, and with SUCCEEDED, in one call: refused alike.
      const together = [
        await lean.transitions.apply(job, "progress", report(own, 2_101), {
          before: [report(own, 2_100)],
        }),
        await lean.transitions.apply(
          job,
          "succeeded",
          { ...own, at: 2_200, startedAt: 2_000, artifact },
          { before: [report(own, 2_100), report(own, 2_101)] },
        ),
      ];
      expect(together, what).toEqual(refusedLean.slice(-2));
      if (refusedGen.length === 3) {
        // STARTED held and sent with SUCCEEDED (with reports, or without): refused as STARTED alone.
        const whole = [
          await lean.transitions.apply(
            job,
            "succeeded",
            { ...own, at: 2_200, startedAt: 2_000, artifact },
            { started: { ...own, at: 2_000, maxAttempts: 3 }, before: [report(own, 2_100)] },
          ),
          await lean.transitions.apply(
            job,
            "succeeded",
            { ...own, at: 2_200, startedAt: 2_000, artifact },
            { started: { ...own, at: 2_000, maxAttempts: 3 } },
          ),
        ];
        expect(whole, what).toEqual([refusedGen[0], refusedGen[0]]);
      }
      expect(
        refusedLean.every((r) => !r.applied),
        what,
      ).toBe(true);
      expect([await snapshot(lean, job), await snapshot(gen, job)], what).toEqual(before);
    }
  });
  it("apply progress reports sent together, and with SUCCEEDED, as they would apply one call each", async () => {
    // A short stream (the cap of 3 entries trims within the calls) and the usual one.
    for (const maxLen of [100, 3]) {
      const job = newJob();
      const [lean, gen] = [await copyOf(job, maxLen), await copyOf(job, maxLen)];
      let published = 0;
      /** The two copies alike once each has published `count` more messages. */
      const alike = async (count: number, what: string) => {
        published += count;
        await waitFor(
          () => lean.messages.length === published && gen.messages.length === published,
        );
        const x = await snapshot(lean, job);
        expect(x, `${what}, stream cap ${maxLen}`).toEqual(await snapshot(gen, job));
        return x;
      };
      const own = { attempt: 1, token: "A", lockToken: "L" };
      const subject = { id: job.id, tenant: job.tenant, reportType: job.reportType, createdAt: 0 };
      const started = { ...own, at: 2_000, maxAttempts: 3 };
      const a = await lean.transitions.apply(subject, "started", started, { withRecord: true });
      await viaGeneral(gen, subject, "started", started);
      await alike(1, "started");
      const record = (a.applied && a.record) || job;

      // Three reports in one PROGRESS call, against three calls.
      const three = [
        report(own, 3_001),
        report(own, 3_002),
        { ...report(own, 3_003), phase: 'é"\\' },
      ];
      const p = await lean.transitions.apply(record, "progress", three[2] as (typeof three)[0], {
        before: three.slice(0, 2),
      });
      for (const r of three) await viaGeneral(gen, record, "progress", r);
      const afterProgress = await alike(3, "three reports in one call");
      expect(afterProgress.live).toEqual([job.id, "3003"]);
      expect(afterProgress.record[recordField.progress]).toBe("3");

      // Two reports with SUCCEEDED in one call, against three calls.
      const two = [report(own, 3_101), report(own, 3_102)];
      const succeeded = { ...own, at: 4_000, startedAt: 2_000, artifact };
      const s = await lean.transitions.apply(record, "succeeded", succeeded, { before: two });
      for (const r of two) await viaGeneral(gen, record, "progress", r);
      await viaGeneral(gen, record, "succeeded", succeeded);
      const x = await alike(3, "two reports with SUCCEEDED in one call");

      const types = x.events.map((f) => decodeEvent("0-1", f).type);
      const all = [
        "started",
        "progress",
        "progress",
        "progress",
        "progress",
        "progress",
        "succeeded",
      ];
      expect(types).toEqual(all.slice(-types.length));
      expect(types).toHaveLength(Math.min(maxLen, all.length));
      const ids = (await redis.xrange(lean.keys.events(job.id), "-", "+")).map(([id]) => id);
      expect(p).toMatchObject({ applied: true });
      expect(s).toEqual({ applied: true, eventId: ids.at(-1) });
      expect(x.record[recordField.state]).toBe("succeeded");
      expect(x.live).toEqual([]);
      expect(x.ttl).toEqual([60, 60, expect.any(Number)]);
    }
  });

  it("apply an attempt's STARTED, reports and SUCCEEDED in one call as they would apply one call each", async () => {
    for (const [maxLen, reports] of [
      [100, 2],
      [100, 0],
      [3, 2],
      [3, 0],
    ] as const) {
      const job = newJob();
      const [lean, gen] = [await copyOf(job, maxLen), await copyOf(job, maxLen)];
      const lines: Array<Record<string, unknown>> = [];
      const logged = createTransitionApplier({
        redis,
        keys: lean.keys,
        settings: { eventStreamMaxLen: maxLen, succeededMs: 60_000, failedMs: 90_000 },
        logger: pino({ level: "info" }, { write: (l: string) => lines.push(JSON.parse(l)) }),
      });
      const own = { attempt: 1, token: "A", lockToken: "L" };
      // What the processor knows from the queue's job: no record read.
      const subject: TransitionSubject = {
        id: job.id,
        tenant: job.tenant,
        reportType: job.reportType,
        createdAt: 1_000,
        idempotencyKeyDigest: job.idempotencyKeyDigest,
      };
      const started = { ...own, at: 2_000, maxAttempts: 3 };
      const before = [report(own, 2_101), { ...report(own, 2_102), phase: 'é"\\' }].slice(
        0,
        reports,
      );
      const succeeded = { ...own, at: 4_000, startedAt: 2_000, artifact };
      const s = await logged.apply(subject, "succeeded", succeeded, { started, before });
      await viaGeneral(gen, subject, "started", started);
      for (const r of before) await viaGeneral(gen, subject, "progress", r);
      await viaGeneral(gen, subject, "succeeded", succeeded);
      const what = `${reports} reports, stream cap ${maxLen}`;
      const count = 2 + reports;
      await waitFor(() => lean.messages.length === count && gen.messages.length === count);
      const x = await snapshot(lean, job);
      expect(x, what).toEqual(await snapshot(gen, job));
      const all = ["started", ...before.map(() => "progress"), "succeeded"];
      expect(
        x.events.map((f) => decodeEvent("0-1", f).type),
        what,
      ).toEqual(all.slice(-Math.min(maxLen, all.length)));
      const ids = (await redis.xrange(lean.keys.events(job.id), "-", "+")).map(([id]) => id);
      expect(s, what).toEqual({ applied: true, eventId: ids.at(-1) });
      expect(x.record[recordField.state]).toBe("succeeded");
      expect(x.record[recordField.attemptToken]).toBe("A");
      expect(x.record[recordField.startedAt]).toBe("2000");
      expect(x.live).toEqual([]);
      expect(x.backlog).toEqual([]);
      expect(x.ttl).toEqual([60, 60, expect.any(Number)]);
      // Both transitions' log lines, in order.
      expect(
        lines.map((l) => [l.msg, l.queued_ms ?? l.duration_ms]),
        what,
      ).toEqual([
        ["job running", 1_000],
        ["job succeeded", 2_000],
      ]);
    }
  });
});
