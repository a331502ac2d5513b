/**
 * A watch that is open while Redis restarts keeps going: the hub subscribes
 * again and every watcher re-reads the log after its last event, so the
 * stream delivers every event exactly once and in order across the outage.
 */
import { afterAll, describe, expect, it } from "vitest";
import type { JobEvent } from "../../gen/reports/v1/job_pb.js";
import { JobEventType, ReportType } from "../../gen/reports/v1/job_pb.js";
import { reportClient } from "../helpers/clients.js";
import { deferred } from "../helpers/generators.js";
import { type RedisServerHandle, startRedisServer } from "../helpers/redis-server.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("createEventHub() across a Redis restart", () => {
  let redis: RedisServerHandle | undefined;
  let t: TestApp | undefined;
  afterAll(async () => {
    await t?.close();
    await redis?.stop();
  });

  it("delivers every event of a job exactly once to a watch that stays open through the outage", async () => {
    redis = await startRedisServer({ appendonly: true });
    const { promise: gate, resolve: release } = deferred();
    t = await startTestApp(
      { REDIS_URL: redis.url },
      {
        generators: {
          weekly: {
            async generate(_input, progress) {
              await progress(30, "before-outage");
              await gate;
              await progress(60, "after-outage");
              await progress(90, "render");
              return { fileName: "r.csv", contentType: "text/csv", content: "a,b\r\n" };
            },
          },
        },
      },
    );
    const client = reportClient("grpc", t.url);
    const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });

    const seen: JobEvent[] = [];
    const abort = new AbortController();
    const watching = (async () => {
      for await (const res of client.watchJob(
        { jobId },
        { signal: abort.signal, timeoutMs: 20_000 },
      )) {
        if (res.event) seen.push(res.event);
      }
    })();
    try {
      await waitFor(() => seen.some((e) => e.phase === "before-outage"), {
        what: "the event before the outage",
      });
      await redis.kill("SIGKILL");
      await redis.restart();
      // Events appended only after the hub is back must still arrive live.
      await waitFor(() => t?.app.hub?.listenerCount === 1, {
        what: "the watch to stay subscribed",
      });
      release();
      await watching;
    } finally {
      abort.abort();
    }

    // The outage may make BullMQ see the attempt as stalled and run it again
    // (at-least-once: a second STARTED is allowed); what must hold is that
    // the watch saw the job's log exactly, before and after the outage.
    const types = seen.map((e) => JobEventType[e.type]);
    expect(types[0]).toBe("QUEUED");
    expect(types.at(-1)).toBe("SUCCEEDED");
    expect(seen.some((e) => e.phase === "after-outage")).toBe(true);
    expect(seen.filter((e) => e.type === JobEventType.SUCCEEDED)).toHaveLength(1);
    const ids = seen.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    // What the watch saw is exactly the job's log.
    const replay: string[] = [];
    for await (const res of client.watchJob({ jobId })) if (res.event) replay.push(res.event.id);
    expect(ids).toEqual(replay);
  });
});
