/**
 * What SUBMIT_WAIT_REPLICAS=1 costs a submit on a Redis Cluster: the
 * submitter (submit script and WAIT in one pipeline to the job's master) on a
 * 3-master cluster with one replica each, QUEUE_SHARDS=6, off and on, one
 * call in flight and 16, twice in turn. Prints requests/s and latency
 * percentiles per case.
 *
 *     BENCH_SECONDS=3 npx tsx bench/cluster/wait-replicas.ts
 *
 * On a shared machine compare rows of one run only.
 */
import { pino } from "pino";
import { loadConfig } from "../../src/config/config.js";
import { createRedisConnection, waitForReady } from "../../src/queue/connections.js";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { createReportQueues } from "../../src/queue/report-queues.js";
import { createSubmitter } from "../../src/queue/submitter.js";
import { startRedisCluster } from "../../test/helpers/redis-cluster.js";
import { measure } from "../measure.js";

const seconds = Number(process.env.BENCH_SECONDS ?? "3");
const logger = pino({ level: "silent" });
const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
const rows: string[] = [];
try {
  const nodes = cluster.startupNodes;
  const redis = createRedisConnection(
    { url: "redis://127.0.0.1", clusterNodes: nodes },
    "command",
    logger,
  );
  await waitForReady(redis, 10_000);
  for (const round of [1, 2]) {
    for (const waitReplicas of [0, 1]) {
      for (const concurrency of [1, 16]) {
        const config = loadConfig({ MAX_BACKLOG: "100000000" });
        const shards = createQueueShards(`w${round}${waitReplicas}${concurrency}`, 6, {
          cluster: true,
        });
        const queues = createReportQueues({
          connection: redis,
          keys: shards.all[0] as (typeof shards.all)[number],
          shards: shards.all,
          logger,
        });
        const submitter = createSubmitter({
          redis,
          queues: queues.byType,
          keys: shards.all[0] as (typeof shards.all)[number],
          shards,
          queuesOf: queues.of,
          settings: {
            worker: config.worker,
            retention: config.retention,
            limits: config.limits,
            redis: {
              submitWaitAof: 0,
              submitWaitReplicas: waitReplicas,
              submitWaitReplicasTimeoutMs: 1000,
            },
          },
        });
        const m = await measure(
          () =>
            submitter.submit({
              tenant: "bench",
              userId: "u",
              reportType: "weekly",
              filters: {},
              priority: "normal",
            }),
          { concurrency, durationMs: seconds * 1000, warmupMs: 500 },
        );
        rows.push(
          [
            `round ${round}`.padEnd(8),
            `SUBMIT_WAIT_REPLICAS=${waitReplicas}`.padEnd(23),
            `in flight ${concurrency}`.padEnd(13),
            `${Math.round(m.rps)} /s`.padStart(9),
            `p50 ${m.p50Ms.toFixed(2)} ms`.padStart(14),
            `p99 ${m.p99Ms.toFixed(2)} ms`.padStart(15),
            m.errors > 0 ? `  ${m.errors} errors (${m.firstError})` : "",
          ].join(" "),
        );
        await queues.close();
      }
    }
  }
  redis.disconnect();
} finally {
  await cluster.stop();
}
process.stdout.write(`${rows.join("\n")}\n`);
