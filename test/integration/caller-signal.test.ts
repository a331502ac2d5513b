/**
 * The caller's AbortSignal reaches every Redis call an RPC makes
 * (queue/caller-signal.ts): nothing is sent for a caller that has gone, and
 * waits end when it goes. Real Redis, real server, real clients.
 */
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, describe, expect, inject, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { type ReportType as DomainReportType, reportTypes } from "../../src/domain/job.js";
import { createEventHub, type EventHub } from "../../src/events/event-hub.js";
import { watchJobEvents } from "../../src/events/watch-job-events.js";
import { createKeys, type Keys, queueNameFor } from "../../src/queue/keys.js";
import { createEventLog } from "../../src/queue/redis-event-log.js";
import { createSubmitter, type Submitter } from "../../src/queue/submitter.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { csvOutput, deferred } from "../helpers/generators.js";
import { scanKeys } from "../helpers/redis-keys.js";
import { startRedisServer } from "../helpers/redis-server.js";
import { connectErrorOf, getJob, waitForState } from "../helpers/rpc.js";
import { testSubmitterSettings } from "../helpers/submitter-settings.js";
import { startTestApp, testPrefix } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const silent = pino({ level: "silent" });

describe("the caller's signal in queue calls", () => {
  const closers: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  /** A submitter over `redis` with its own prefix, as the app builds it. */
  function submitterOn(redis: Redis, keys: Keys): Submitter {
    const queues = Object.fromEntries(
      reportTypes.map((type) => {
        // skipMetasUpdate: BullMQ would write its queue's meta key once connected, at
        // a moment of its own, and the tests look for what the submit writes.
        const q = new Queue(queueNameFor(type), {
          connection: redis,
          prefix: keys.bullPrefix,
          skipMetasUpdate: true,
        });
        closers.push(() => q.close());
        return [type, q];
      }),
    ) as Record<DomainReportType, Queue>;
    return createSubmitter({
      redis,
      queues,
      keys,
      settings: testSubmitterSettings({ attempts: 1 }),
    });
  }

  const input = {
    tenant: "acme",
    userId: "u1",
    reportType: "weekly",
    filters: {},
    priority: "normal",
    idempotencyKey: "k1",
  } as const;

  it("sends no submit for a caller that has gone: nothing is written, the call rejects with its reason", async () => {
    const redis = new Redis(inject("redisUrl"));
    closers.push(() => redis.disconnect());
    const keys = createKeys(testPrefix());
    const submitter = submitterOn(redis, keys);
    const gone = new AbortController();
    const reason = new DOMException("the client left", "AbortError");
    gone.abort(reason);

    await expect(submitter.submit(input, gone.signal)).rejects.toBe(reason);
    expect(await scanKeys(redis, `${keys.prefix}*`)).toEqual([]);
    // The same submit from a caller still there writes its job.
    const { job } = await submitter.submit(input, new AbortController().signal);
    expect(await scanKeys(redis, `${keys.prefix}*`)).toContain(keys.job(job.id));
  });

  it("answers CancelJob of a running job at the client's deadline, not after the whole wait", async () => {
    // The generator ignores its cancel: CancelJob would wait its full 1.5 s for it.
    const started = deferred();
    const release = deferred();
    const { logger, lines } = capturedLogger();
    const app = await startTestApp(
      {},
      {
        logger,
        generators: {
          weekly: {
            async generate() {
              started.resolve();
              await release.promise;
              return csvOutput;
            },
          },
        },
      },
    );
    closers.push(() => app.close());
    closers.push(() => release.resolve());
    // Connect JSON without a client-side timer: the deadline travels as
    // connect-timeout-ms and only the server ends the call.
    const client = createClient(
      ReportService,
      createConnectTransport({ baseUrl: app.url, httpVersion: "1.1" }),
    );
    const { jobId } = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
    await started.promise;
    await waitForState(client, jobId, JobState.RUNNING);

    const began = performance.now();
    const err = await connectErrorOf(
      client.cancelJob({ jobId, reason: "stop" }, { headers: { "connect-timeout-ms": "200" } }),
    );
    const tookMs = performance.now() - began;
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(tookMs).toBeLessThan(1000);
    // The job was asked to stop and still runs: the worker has not let go.
    expect((await getJob(client, jobId)).state).toBe(JobState.RUNNING);
    expect(lines.filter((l) => l.msg === "unexpected error")).toEqual([]);
  });

  describe("WatchJob", () => {
    it("issues no further replay once its client left during the replay", async () => {
      // Its own server: the test pauses its writes.
      const server = await startRedisServer();
      closers.push(() => server.stop());
      const url = server.url;
      const redis = new Redis(url);
      const admin = new Redis(url);
      const subscriber = new Redis(url, { maxRetriesPerRequest: null });
      closers.push(() => redis.disconnect());
      closers.push(() => admin.disconnect());
      closers.push(() => subscriber.disconnect());
      await new Promise<void>((resolve) => subscriber.once("ready", () => resolve()));
      const keys = createKeys(testPrefix());
      const { job } = await submitterOn(redis, keys).submit(input);
      const log = createEventLog({ redis, keys, maxLen: 100 });
      const hub: EventHub = createEventHub({ subscriber, keys, logger: silent });
      closers.push(() => hub.close());
      const queued = (await log.replay(job.id))?.events[0]?.id;
      expect(queued).toBeDefined();
      const replays = async () => {
        const stats = String(await admin.info("commandstats"));
        return Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
      };

      // Replays (scripts) wait while writes are paused; SUBSCRIBE and CLIENT do not.
      await admin.call("CLIENT", "PAUSE", "30000", "WRITE");
      const before = await replays();
      const client = new AbortController();
      const watch = watchJobEvents(
        { log, hub },
        {
          jobId: job.id,
          tenant: "acme",
          afterEventId: queued,
          signal: client.signal,
          keepaliveMs: 60_000,
        },
      );
      const first = watch.next();
      first.catch(() => undefined);
      // The replay is sent and held by the pause (a blocked client, flags=b).
      await waitFor(
        async () =>
          /flags=b .*cmd=evalsha/.test(
            String(await admin.call("CLIENT", "LIST", "TYPE", "normal")),
          ),
        { what: "the replay to wait on the paused server" },
      );

      // The client leaves, then the subscriber reconnects: the watch is told to resync.
      client.abort(new DOMException("the client left", "AbortError"));
      const resynced = deferred();
      const probe = await hub.subscribe(job.id, {
        onEvent() {},
        onResync: () => resynced.resolve(),
      });
      closers.push(probe);
      await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
      await resynced.promise;

      await admin.call("CLIENT", "UNPAUSE");
      await expect(first).rejects.toMatchObject({ name: "AbortError" });
      // Only the replay that was under way when the client left ran.
      expect((await replays()) - before).toBe(1);
    });
  });
});
