/**
 * The contract tests (test/helpers/contract-suite.ts) on the shared
 * 3-master Redis Cluster with QUEUE_SHARDS=6: REDIS_CLUSTER_NODES switches
 * every connection to an ioredis Cluster, every key of a job is in its
 * shard's slot, events travel by sharded pub/sub, and the shards' tags put
 * two shards on each master.
 */
import { afterAll, describe, expect, inject, it } from "vitest";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { describeContract } from "../helpers/contract-suite.js";
import { attachRedisCluster } from "../helpers/redis-cluster.js";
import { scanKeys } from "../helpers/redis-keys.js";

const seeds = inject("redisClusterNodes");
const cluster = attachRedisCluster(seeds);
afterAll(() => {
  cluster.close();
});

/** Every key matching `pattern` on every master. */
async function scanMasters(pattern: string): Promise<string[]> {
  const masters = (await cluster.shards()).map((s) => s.master);
  return (await Promise.all(masters.map((m) => scanKeys(m.admin, pattern)))).flat();
}

describe("queue shards on the cluster", () => {
  it("spreads 6 shards' tags 2 per master (CLUSTER KEYSLOT)", async () => {
    const shards = createQueueShards("p", 6, { cluster: true });
    const perMaster = new Map<number, number>();
    for (const keys of shards.all) {
      const master = await cluster.masterForKey(keys.job(`${keys.tag}_${"a".repeat(22)}`));
      perMaster.set(master.port, (perMaster.get(master.port) ?? 0) + 1);
    }
    expect([...perMaster.values()]).toEqual([2, 2, 2]);
  });
});

describeContract({
  name: "a 3-master Redis Cluster with QUEUE_SHARDS=6",
  env: () => ({ REDIS_CLUSTER_NODES: seeds, QUEUE_SHARDS: "6" }),
  shards: 6,
  cluster: true,
  scan: scanMasters,
});
