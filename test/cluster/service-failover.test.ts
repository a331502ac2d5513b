/**
 * The service on a cluster of its own (3 masters, 1 replica each,
 * cluster-node-timeout 2000 ms) with SUBMIT_WAIT_REPLICAS=1: a master is
 * SIGKILLed while submits flow, its replica is promoted, and every job the
 * API acknowledged, before, during or after the failover, ends SUCCEEDED.
 * Submits refused meanwhile answer UNAVAILABLE, never INTERNAL.
 */

import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type JobEvent, JobEventType, JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { openTenant } from "../../src/api/auth.js";
import { shardTagOf } from "../../src/queue/keys.js";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { digest } from "../../src/queue/submitter.js";
import { reportClient } from "../helpers/clients.js";
import { type RedisClusterHandle, startRedisCluster } from "../helpers/redis-cluster.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

let cluster: RedisClusterHandle;
const apps: TestApp[] = [];
beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
});
afterAll(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
  await cluster?.stop();
});

/** Connections per client name on each master, from CLIENT LIST. */
async function connectionsByName(): Promise<Array<Map<string, number>>> {
  const masters = (await cluster.shards()).map((s) => s.master);
  return Promise.all(
    masters.map(async (m) => {
      const names = new Map<string, number>();
      const list = String(await m.admin.call("CLIENT", "LIST", "TYPE", "normal"));
      const pubsub = String(await m.admin.call("CLIENT", "LIST", "TYPE", "pubsub"));
      for (const line of `${list}\n${pubsub}`.split("\n")) {
        const name = /\bname=(\S*)/.exec(line)?.[1];
        if (name === undefined || name === "") continue;
        names.set(name, (names.get(name) ?? 0) + 1);
      }
      return names;
    }),
  );
}

describe("an API process on the cluster", () => {
  it("serves watchers of every shard over at most one subscriber connection per master", async () => {
    const api = await startTestApp(
      { REDIS_CLUSTER_NODES: cluster.seeds, QUEUE_SHARDS: "6" },
      { mode: "api" },
    );
    try {
      const client = reportClient("grpc", api.url);
      const watches: Array<Promise<unknown>> = [];
      const abort = new AbortController();
      let opened = 0;
      for (let i = 0; i < 30; i++) {
        const { jobId } = await client.submitReport({ userId: "w", reportType: ReportType.WEEKLY });
        watches.push(
          (async () => {
            for await (const _ of client.watchJob({ jobId }, { signal: abort.signal })) {
              opened++;
            }
          })().catch(() => undefined),
        );
      }
      await waitFor(() => opened >= 30 && api.app.hub?.listenerCount === 30, {
        timeoutMs: 20_000,
        what: "30 open watches",
      });
      const perMaster = await connectionsByName();
      console.info(
        `connections per master of one API process: ${JSON.stringify(perMaster.map((m) => Object.fromEntries(m)))}`,
      );
      for (const names of perMaster) {
        const subscribers = [...names]
          .filter(([n]) => n.includes("subscriber") && n.includes("ssubscriber"))
          .reduce((sum, [, c]) => sum + c, 0);
        expect(subscribers).toBe(1);
        // Every connection of the process on this master: the command and
        // hub clusters' node connections and the sharded subscriber.
        const total = [...names.values()].reduce((a, b) => a + b, 0);
        expect(total).toBeLessThanOrEqual(3);
      }
      abort.abort();
      await Promise.all(watches);
    } finally {
      await api.close();
    }
  });
});

describe("the service through a master's failover", () => {
  it("ends every job acknowledged with SUBMIT_WAIT_REPLICAS=1 when a master is killed under load", async () => {
    const env = {
      REDIS_CLUSTER_NODES: cluster.seeds,
      QUEUE_SHARDS: "6",
      SUBMIT_WAIT_REPLICAS: "1",
      SUBMIT_WAIT_REPLICAS_TIMEOUT_MS: "2000",
      REPORT_PHASE_DELAY_MS: "5",
    };
    const api = await startTestApp(env, { mode: "api" });
    apps.push(api);
    const worker = await startTestApp(
      { ...env, REDIS_PREFIX: api.config.redis.prefix },
      { mode: "worker" },
    );
    apps.push(worker);
    const client = reportClient("grpc", api.url);

    const acknowledged: string[] = [];
    const refusals = new Map<string, number>();
    const refusalMessages = new Map<string, string>();
    let stop = false;
    let n = 0;
    const submitter = async () => {
      while (!stop) {
        const i = n++;
        try {
          const { jobId } = await client.submitReport(
            { userId: `u-${i % 7}`, reportType: ReportType.WEEKLY, idempotencyKey: `fo-${i}` },
            { timeoutMs: 10_000 },
          );
          acknowledged.push(jobId);
        } catch (err) {
          const code = err instanceof ConnectError ? Code[err.code] : String(err);
          refusals.set(code, (refusals.get(code) ?? 0) + 1);
          if (!refusalMessages.has(code)) refusalMessages.set(code, String(err));
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    // A job of the victim's shard that runs only after the failover, watched
    // from before the kill: its live events must come through the promoted
    // master (ioredis moves the sharded subscription; the hub resyncs).
    const shards = createQueueShards(api.config.redis.prefix, 6, { cluster: true });
    let watchedKey = "";
    for (let i = 0; watchedKey === ""; i++) {
      if (shards.pick(openTenant, digest(`watched-${i}`)) === shards.all[0])
        watchedKey = `watched-${i}`;
    }
    const victim = await cluster.masterForTag(shards.all[0]?.tag as string);
    const { jobId: watchedId } = await client.submitReport({
      userId: "watched",
      reportType: ReportType.WEEKLY,
      idempotencyKey: watchedKey,
      runAt: timestampFromMs(Date.now() + 8000),
    });
    expect(shardTagOf(watchedId)).toBe(shards.all[0]?.tag);
    // A watcher as the contract asks callers to be: on UNAVAILABLE (the hub
    // ends watches it cannot serve), it resumes after the last event it saw.
    const watched: JobEvent[] = [];
    let resumes = 0;
    const resumeBackoffMs = 200;
    const watching = (async () => {
      const deadline = Date.now() + 90_000;
      while (watched.at(-1)?.type !== JobEventType.SUCCEEDED && Date.now() < deadline) {
        try {
          const afterEventId = watched.at(-1)?.id;
          for await (const r of client.watchJob(
            { jobId: watchedId, ...(afterEventId ? { afterEventId } : {}) },
            { timeoutMs: 30_000 },
          )) {
            if (r.event) watched.push(r.event);
          }
        } catch (err) {
          if (!(err instanceof ConnectError && err.code === Code.Unavailable)) throw err;
          resumes++;
          // A client's back-off before it resumes, as a real watcher would.
          await new Promise((r) => setTimeout(r, resumeBackoffMs));
        }
      }
    })();
    watching.catch(() => undefined);
    await waitFor(() => watched.length >= 1, { what: "the watched job's QUEUED event" });

    const load = Promise.all([submitter(), submitter(), submitter()]);
    await waitFor(() => acknowledged.length >= 30, {
      timeoutMs: 20_000,
      what: "30 acknowledged submits",
    });
    const before = acknowledged.length;
    const failover = await cluster.failover(victim);
    const atFailover = acknowledged.length;
    await waitFor(() => acknowledged.length >= atFailover + 30, {
      timeoutMs: 30_000,
      what: "30 more acknowledged submits after the failover",
    });
    stop = true;
    await load;
    console.info(
      `failover in ${failover.ms} ms; ${before} acknowledged before the kill, ${atFailover} by the promotion, ${acknowledged.length} in all; refused: ${JSON.stringify(Object.fromEntries(refusals))} (${JSON.stringify(Object.fromEntries(refusalMessages))})`,
    );
    // A refusal is UNAVAILABLE (retry), never INTERNAL.
    for (const code of refusals.keys()) expect(["Unavailable", "DeadlineExceeded"]).toContain(code);

    const pending = new Set(acknowledged);
    const waitStart = Date.now();
    await waitFor(
      async () => {
        for (const jobId of [...pending]) {
          const { job } = await client.getJob({ jobId }).catch(() => ({ job: undefined }));
          if (job?.state === JobState.SUCCEEDED) pending.delete(jobId);
        }
        return pending.size === 0;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: "every acknowledged job to succeed" },
    ).catch((err: unknown) => {
      throw new Error(`not SUCCEEDED: ${[...pending].join(", ")}`, { cause: err });
    });

    console.info(
      `every acknowledged job SUCCEEDED ${Date.now() - waitStart} ms after the load stopped`,
    );
    // The watch lived through the failover: every event once, in order, to the end.
    await watching;
    console.info(`the watcher resumed ${resumes} times`);
    expect(watched.at(-1)?.type).toBe(JobEventType.SUCCEEDED);
    const replayed: string[] = [];
    for await (const r of client.watchJob({ jobId: watchedId }))
      if (r.event) replayed.push(r.event.id);
    expect(watched.map((e) => e.id)).toEqual(replayed);
  }, 150_000);
});
