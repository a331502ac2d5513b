/**
 * Progress reports that come close together (PROGRESS_LINGER_MS): a report
 * within the linger of the attempt's previous write is held, the reports
 * after it join it, and they are written together in one script call (each
 * its own event), or with the SUCCEEDED write when the generator returns
 * first; a report after a quieter gap is written at once. Each case runs one
 * job on a private Redis (its scripts loaded first, so every call is one
 * EVALSHA) with its queue paused until a MONITOR connection, a subscriber of
 * the job's channel and a watcher are in place, and counts the transition
 * script calls that name the job.
 */
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import type { AppOptions } from "../../src/app.js";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createKeys, type Keys } from "../../src/queue/keys.js";
import { loadLuaScript } from "../../src/queue/scripts/load.js";
import {
  abortableDelay,
  PermanentReportError,
  type ReportGenerator,
} from "../../src/worker/generator.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { reportClient } from "../helpers/clients.js";
import { csvOutput, deferred, scripted } from "../helpers/generators.js";
import { openMonitor } from "../helpers/redis-monitor.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { bullQueue, history, outline, type ReportClient } from "../helpers/rpc.js";
import { openSubscriber } from "../helpers/subscriber.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const attemptScript = loadLuaScript("apply-attempt");
const generalScript = loadLuaScript("apply-transition");

/** What a job's run did in Redis, as its observers saw it. */
interface Run {
  /**
   * The transition script calls naming the job, in order: apply-attempt.lua's
   * by its transition (its first argument), apply-transition.lua's as "general".
   */
  calls: string[];
  /** The job's event entries, as stored. */
  entries: Array<[id: string, fields: string[]]>;
  /** Messages published on the job's channel while it ran, as the event hub parses them. */
  messages: unknown[];
  /** "TYPE(attempt)" of each event a watcher (open before the job ran) got. */
  watched: string[];
  /** The ids of the events the watcher got. */
  watchedIds: string[];
}

describe("progress reports held together (PROGRESS_LINGER_MS)", () => {
  let server: RedisServerHandle;
  let t: TestApp | undefined;
  const closers: Array<() => unknown> = [];

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await server.stop();
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await t?.close();
    t = undefined;
  });

  function connect(): Redis {
    const redis = new Redis(server.url);
    closers.push(() => redis.disconnect());
    return redis;
  }

  /**
   * Runs one weekly job on an app with `env` and `options` and returns what
   * it did. `whileRunning` runs once the queue resumed, before the job's end
   * is awaited.
   */
  async function runJob(
    env: Record<string, string>,
    options: AppOptions,
    whileRunning?: (jobId: string, keys: Keys) => Promise<void>,
    beforeRunning?: (jobId: string, keys: Keys) => Promise<void>,
  ): Promise<Run & { jobId: string; client: ReportClient }> {
    const redis = connect();
    // Cached before the first call: each transition is one EVALSHA, no NOSCRIPT and EVAL.
    for (const { source } of [attemptScript, generalScript]) await redis.script("LOAD", source);
    t = await startTestApp({ REDIS_URL: server.url, ...env }, options);
    const keys = createKeys(t.config.redis.prefix);
    const bull = bullQueue(t.config.redis.prefix, server.url);
    closers.push(() => bull.close());
    await bull.queue.pause();
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });

    const calls: Run["calls"] = [];
    const marker = `${t.config.redis.prefix}:marker`;
    let markerSeen = false;
    const monitor = await openMonitor(server.url);
    closers.push(() => monitor.disconnect());
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source === "lua") return;
      const name = String(args[0]).toLowerCase();
      if (args.includes(marker)) markerSeen = true;
      if (name !== "evalsha" && name !== "eval") return;
      if (!args.some((a) => String(a).includes(jobId))) return;
      const script = String(args[1]);
      if (script === attemptScript.sha || script === attemptScript.source) {
        calls.push(String(args[3 + Number(args[2])]));
      } else if (script === generalScript.sha || script === generalScript.source) {
        calls.push("general");
      }
    });
    const subscriber = openSubscriber(server.url);
    closers.push(() => subscriber.disconnect());
    const channel = keys.eventChannel(jobId);
    const sentinel = "end of the run";
    const messages: unknown[] = [];
    subscriber.on("smessage", (ch: string, m: string) => {
      if (ch === channel) messages.push(m === sentinel ? m : JSON.parse(m));
    });
    await subscriber.ssubscribe(channel);
    const opened = deferred();
    const watching = history(client, jobId, { onEvent: () => opened.resolve() });
    // The watch has replayed the job's QUEUED event: everything after it comes live.
    await opened.promise;

    await beforeRunning?.(jobId, keys);
    await bull.queue.resume();
    await whileRunning?.(jobId, keys);
    const events = await watching;
    // Everything the job did is in the monitor and the subscription once these came back.
    await redis.get(marker);
    await redis.spublish(channel, sentinel);
    await waitFor(() => markerSeen && messages.includes(sentinel), {
      what: "the monitor and the subscriber to catch up",
    });
    messages.pop();
    return {
      jobId,
      client,
      calls,
      entries: (await redis.xrange(keys.events(jobId), "-", "+")) as Run["entries"],
      messages,
      watched: outline(events),
      watchedIds: events.map((e) => e.id),
    };
  }

  /** "type progress phase" of each entry. */
  function outlineEntries(entries: Run["entries"]): string[] {
    return entries.map(([id, fields]) => {
      const e = decodeEvent(id, fields);
      return `${e.type} ${e.progress} ${e.phase}`;
    });
  }

  it("writes a drain's job (REPORT_PHASE_DELAY_MS=0) in one transition script call: STARTED, PROGRESS, PROGRESS and SUCCEEDED together", async () => {
    // A linger far longer than the job: the reports are held whatever the machine's load.
    const run = await runJob({ REPORT_PHASE_DELAY_MS: "0", PROGRESS_LINGER_MS: "60000" }, {});
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "progress 40 fetch-data",
      "progress 80 render",
      "succeeded 100 completed",
    ]);
    expect(run.calls).toEqual(["started+progress+succeeded"]);
    // Published as before, one message per event, in order: [entry id, entry fields].
    expect(run.messages).toEqual(run.entries.slice(1));
    // A watcher open before the job ran got every event once, in order.
    expect(run.watched).toEqual([
      "QUEUED(0)",
      "STARTED(1)",
      "PROGRESS(1)",
      "PROGRESS(1)",
      "SUCCEEDED(1)",
    ]);
    expect(run.watchedIds).toEqual(run.entries.map(([id]) => id));
  });

  it("writes STARTED before the generator starts, and every report at once, with PROGRESS_LINGER_MS=0", async () => {
    let stateAtStart: string | null = null;
    let redis: Redis | undefined;
    let keys: Keys | undefined;
    const weekly = scripted(async (input, progress) => {
      stateAtStart = (await redis?.hget(keys?.job(input.jobId) ?? "", "state")) ?? null;
      await progress(40, "fetch-data");
      await progress(80, "render");
      return csvOutput;
    });
    const run = await runJob(
      { PROGRESS_LINGER_MS: "0" },
      { generators: { weekly } },
      undefined,
      async (_id, k) => {
        redis = connect();
        keys = k;
      },
    );
    expect(stateAtStart).toBe("running");
    expect(run.calls).toEqual(["started", "progress", "progress", "succeeded"]);
    expect(run.messages).toEqual(run.entries.slice(1));
    expect(run.watchedIds).toEqual(run.entries.map(([id]) => id));
  });

  it("writes STARTED first for a job queued by an earlier version (its BullMQ data without queuedAt)", async () => {
    let stateAtStart: string | null = null;
    let redis: Redis | undefined;
    let keys: Keys | undefined;
    const weekly = scripted(async (input, progress) => {
      stateAtStart = (await redis?.hget(keys?.job(input.jobId) ?? "", "state")) ?? null;
      await progress(40, "fetch-data");
      return csvOutput;
    });
    const run = await runJob(
      { PROGRESS_LINGER_MS: "60000" },
      { generators: { weekly } },
      undefined,
      async (jobId, k) => {
        redis = connect();
        keys = k;
        const bullJobKey = k.bullJobLock("weekly", jobId).slice(0, -":lock".length);
        const data = JSON.parse((await redis.hget(bullJobKey, "data")) ?? "{}");
        expect(data).toMatchObject({ idempotencyKeyDigest: "", queuedAt: expect.any(Number) });
        delete data.idempotencyKeyDigest;
        delete data.queuedAt;
        await redis.hset(bullJobKey, "data", JSON.stringify(data));
      },
    );
    expect(stateAtStart).toBe("running");
    expect(run.calls).toEqual(["started", "progress+succeeded"]);
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "progress 40 fetch-data",
      "succeeded 100 completed",
    ]);
  });

  it("writes a report that comes after a gap longer than the linger at once, not with the generator's end", async () => {
    const weekly = scripted(async (_input, progress, signal) => {
      // Simulated work longer than the linger (50 ms), then a report, then the end at once.
      await abortableDelay(150, signal);
      await progress(40, "fetch-data");
      return csvOutput;
    });
    const run = await runJob({ PROGRESS_LINGER_MS: "50" }, { generators: { weekly } });
    expect(run.calls).toEqual(["started", "progress", "succeeded"]);
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "progress 40 fetch-data",
      "succeeded 100 completed",
    ]);
    expect(run.messages).toEqual(run.entries.slice(1));
  });

  it("holds reports made close together and writes them in one call once the linger is over, each its own event", async () => {
    let redis: Redis | undefined;
    let keys: Keys | undefined;
    const weekly: ReportGenerator = {
      async generate(input, progress) {
        await progress(10, "first");
        await progress(20, "second");
        await progress(30, "third");
        // Returns only once they are written: they do not wait for the end.
        await waitFor(
          async () =>
            redis !== undefined &&
            keys !== undefined &&
            (await redis.xlen(keys.events(input.jobId))) === 5,
          { what: "the held reports to be written" },
        );
        return csvOutput;
      },
    };
    const run = await runJob(
      { PROGRESS_LINGER_MS: "200" },
      { generators: { weekly } },
      async (_jobId, k) => {
        redis = connect();
        keys = k;
      },
    );
    expect(run.calls).toEqual(["started", "progress", "succeeded"]);
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "progress 10 first",
      "progress 20 second",
      "progress 30 third",
      "succeeded 100 completed",
    ]);
    expect(run.messages).toEqual(run.entries.slice(1));
    expect(run.watchedIds).toEqual(run.entries.map(([id]) => id));
  });

  it("writes held reports before the failure when the generator fails", async () => {
    const weekly = scripted(async (_input, progress) => {
      await progress(40, "fetch-data");
      await progress(80, "render");
      throw new PermanentReportError("no such region");
    });
    const run = await runJob({ PROGRESS_LINGER_MS: "60000" }, { generators: { weekly } });
    // FAILED is written by apply-transition.lua.
    expect(run.calls).toEqual(["started", "progress", "general"]);
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "progress 40 fetch-data",
      "progress 80 render",
      "failed 80 render",
    ]);
    expect(run.messages).toEqual(run.entries.slice(1));
    expect(run.watched.at(-1)).toBe("FAILED(1)");
  });

  it("drops the held STARTED and reports of an attempt that lost its job: they are never written", async () => {
    const entered = deferred();
    let first = true;
    const weekly = scripted(async (_input, progress, signal) => {
      await progress(40, "fetch-data");
      await progress(80, "render");
      if (first) {
        first = false;
        entered.resolve();
        // Works until told to stop.
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        signal.throwIfAborted();
      }
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    const run = await runJob(
      { PROGRESS_LINGER_MS: "60000" },
      { generators: { weekly }, logger },
      async (jobId, keys) => {
        await entered.promise;
        // The lock goes (a partition, a pause): the worker sees it at its next renewal.
        await connect().del(keys.bullJobLock("weekly", jobId));
        await waitFor(
          () => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"),
          { what: "the attempt to end as lost" },
        );
      },
    );
    expect(lines.find((l) => l.msg === "attempt lost its job; it changes nothing")).toMatchObject({
      step: "running",
      fenced: "lock",
    });
    // The first attempt wrote nothing (its STARTED and reports were held);
    // the re-run wrote its STARTED and reports with its SUCCEEDED.
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "progress 40 fetch-data",
      "progress 80 render",
      "succeeded 100 completed",
    ]);
    expect(run.calls).toEqual(["started+progress+succeeded"]);
    expect(run.messages).toEqual(run.entries.slice(1));
    expect(weekly.calls).toEqual([1, 1]);
  });

  it("drops the held reports of an attempt that lost its job after its STARTED went: they are never written", async () => {
    const entered = deferred();
    let first = true;
    let redis: Redis | undefined;
    let keys: Keys | undefined;
    const weekly = scripted(async (input, progress, signal) => {
      if (first) {
        // STARTED goes alone once the linger is over; the reports right after
        // it are held (up to the linger again).
        await waitFor(
          async () =>
            redis !== undefined &&
            keys !== undefined &&
            (await redis.xlen(keys.events(input.jobId))) === 2,
          { what: "the STARTED write" },
        );
      }
      await progress(40, "fetch-data");
      await progress(80, "render");
      if (first) {
        first = false;
        entered.resolve();
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        signal.throwIfAborted();
      }
      return csvOutput;
    });
    const { logger, lines } = capturedLogger();
    const run = await runJob(
      { PROGRESS_LINGER_MS: "3000" },
      { generators: { weekly }, logger },
      async (jobId, k) => {
        redis = connect();
        keys = k;
        await entered.promise;
        await connect().del(k.bullJobLock("weekly", jobId));
        await waitFor(
          () => lines.some((l) => l.msg === "attempt lost its job; it changes nothing"),
          { what: "the attempt to end as lost" },
        );
      },
    );
    expect(lines.find((l) => l.msg === "attempt lost its job; it changes nothing")).toMatchObject({
      step: "running",
      fenced: "lock",
    });
    // The first attempt wrote its STARTED only; the re-run's (it began
    // before its linger was over) went with its reports and SUCCEEDED.
    expect(outlineEntries(run.entries)).toEqual([
      "queued 0 ",
      "started 5 started",
      "started 5 started",
      "progress 40 fetch-data",
      "progress 80 render",
      "succeeded 100 completed",
    ]);
    expect(run.calls).toEqual(["started", "started+progress+succeeded"]);
    expect(run.messages).toEqual(run.entries.slice(1));
    expect(weekly.calls).toEqual([1, 1]);
  });
});
