/**
 * The shared test cluster (test/helpers/cluster-global-setup.ts): 3 masters
 * serving every slot in equal ranges, its seed list in the REDIS_CLUSTER_NODES
 * format, the master-for-a-key helper agreeing with where Redis really keeps
 * the key, and an ioredis Cluster client reading what it wrote.
 */
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, inject, it } from "vitest";
import { attachRedisCluster, CLUSTER_SLOTS } from "../helpers/redis-cluster.js";

const cluster = attachRedisCluster(inject("redisClusterNodes"));
afterAll(() => cluster.close());

describe("the shared test cluster", () => {
  it("has 3 masters serving all 16384 slots in equal contiguous ranges, and no replicas", async () => {
    await cluster.waitUntilHealthy();
    const shards = await cluster.shards();
    expect(shards).toHaveLength(3);
    expect(shards.map((s) => s.slots)).toEqual([[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]);
    expect(shards.flatMap((s) => s.replicas)).toEqual([]);
    const covered = shards.flatMap((s) => s.slots).reduce((n, [a, b]) => n + b - a + 1, 0);
    expect(covered).toBe(CLUSTER_SLOTS);
    for (const node of cluster.nodes) {
      const info = String(await node.admin.call("CLUSTER", "INFO"));
      expect(info, node.address).toContain("cluster_state:ok");
      expect(info, node.address).toContain("cluster_slots_ok:16384");
    }
  });

  it("names every node in its seed list as host:port,...", () => {
    const seeds = inject("redisClusterNodes");
    expect(seeds).toMatch(/^127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+){2}$/);
    expect(cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(",")).toBe(seeds);
    for (const { port } of cluster.startupNodes) {
      // The cluster bus port (port + 10000) must exist too.
      expect(port).toBeLessThan(55_536);
    }
    expect(inject("redisClusterStartMs")).toBeGreaterThan(0);
    console.info(`shared 3-master cluster started in ${inject("redisClusterStartMs")} ms`);
  });

  it("finds the master that really holds a key, by key or by hash tag", async () => {
    const tag = `t-${randomUUID()}`;
    const key = `{${tag}}:record`;
    const client = cluster.client();
    await client.set(key, "v");
    const master = await cluster.masterForKey(key);
    expect(await cluster.masterForTag(tag)).toBe(master);
    // The owner answers; every other master redirects.
    expect(await master.admin.get(key)).toBe("v");
    for (const other of cluster.nodes.filter((n) => n !== master)) {
      await expect(other.admin.get(key)).rejects.toThrow(/^MOVED \d+ 127\.0\.0\.1:(\d+)$/);
    }
    const slot = await cluster.keySlot(key);
    expect(await cluster.keySlot(`{${tag}}:other`)).toBe(slot);
    await client.quit();
  });

  it("serves an ioredis Cluster client that reads what it wrote, across all masters", async () => {
    const client = cluster.client();
    const prefix = randomUUID();
    const keys = Array.from({ length: 60 }, (_, i) => `${prefix}:${i}`);
    await Promise.all(keys.map((k, i) => client.set(k, String(i))));
    expect(await Promise.all(keys.map((k) => client.get(k)))).toEqual(
      keys.map((_, i) => String(i)),
    );
    // Untagged keys spread: every master got some.
    const owners = new Set(await Promise.all(keys.map((k) => cluster.masterForKey(k))));
    expect(owners.size).toBe(3);
    await client.quit();
  });
});
