/**
 * BullMQ on the shared test cluster, as BullMQ documents it for Redis
 * Cluster: the prefix is a hash tag, so every key of a queue lives in one
 * slot; workers' connections retry forever (maxRetriesPerRequest: null);
 * producers fail fast (no offline queue). Queues spread over the picked
 * shard tags land evenly on the masters. Without a hash tag Redis refuses
 * BullMQ's scripts (CROSSSLOT).
 */
import { randomUUID } from "node:crypto";
import { type Job, Queue, Worker } from "bullmq";
import type { Cluster } from "ioredis";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import { pickShardTags } from "../../src/queue/shard-tags.js";
import { attachRedisCluster, type ClusterNode } from "../helpers/redis-cluster.js";

const cluster = attachRedisCluster(inject("redisClusterNodes"));
afterAll(() => cluster.close());

/** Keys matching `pattern` on one node (SCAN: only that node's keys). */
async function keysOn(node: ClusterNode, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await node.admin.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== "0");
  return found;
}

describe("BullMQ on a Redis Cluster", () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  /** A producer client (fail fast) and a worker client (retry forever), as BullMQ documents. */
  function clients(): { producer: Cluster; consumer: Cluster } {
    const producer = cluster.client({ enableOfflineQueue: false });
    const consumer = cluster.client({ redisOptions: { maxRetriesPerRequest: null } });
    closers.push(
      async () => producer.quit(),
      async () => consumer.quit(),
    );
    return { producer, consumer };
  }

  it("runs a job with a hash-tagged prefix, every key of the queue on the tag's master", async () => {
    const { producer, consumer } = clients();
    await new Promise<void>((resolve) => producer.once("ready", () => resolve()));
    const tag = `bull-${randomUUID()}`;
    const prefix = `{${tag}}`;
    const queue = new Queue("reports", { connection: producer, prefix });
    closers.push(() => queue.close());
    const done = new Promise<Job>((resolve, reject) => {
      const worker = new Worker(
        "reports",
        async (job: Job<{ n: number }>) => ({ doubled: job.data.n * 2 }),
        { connection: consumer, prefix },
      );
      closers.push(() => worker.close());
      worker.on("completed", (job) => resolve(job));
      worker.on("failed", (_job, err) => reject(err));
    });
    const added = await queue.add("weekly", { n: 21 });
    const job = await done;
    expect(job.id).toBe(added.id);
    expect(job.returnvalue).toEqual({ doubled: 42 });
    expect(await queue.getJobState(added.id ?? "")).toBe("completed");

    const owner = await cluster.masterForTag(tag);
    expect((await keysOn(owner, `${prefix}:*`)).length).toBeGreaterThan(2);
    for (const other of cluster.nodes.filter((n) => n !== owner)) {
      expect(await keysOn(other, `${prefix}:*`), other.address).toEqual([]);
    }
  });

  it("spreads queues over the picked shard tags: two per master for six shards", async () => {
    const { producer, consumer } = clients();
    const run = randomUUID().slice(0, 8);
    const tags = pickShardTags(6, { prefix: `b${run}-` });
    const queues = tags.map(
      (t) => new Queue("reports", { connection: producer, prefix: `{${t}}` }),
    );
    for (const q of queues) closers.push(() => q.close());
    let completed = 0;
    const allDone = new Promise<void>((resolve, reject) => {
      for (const t of tags) {
        const w = new Worker("reports", async () => "ok", {
          connection: consumer,
          prefix: `{${t}}`,
        });
        closers.push(() => w.close());
        w.on("completed", () => {
          if (++completed === tags.length * 3) resolve();
        });
        w.on("failed", (_job, err) => reject(err));
      }
    });
    await Promise.all(queues.flatMap((q) => [1, 2, 3].map((i) => q.add("weekly", { i }))));
    await allDone;
    const perMaster = new Map<ClusterNode, number>();
    for (const t of tags) {
      const m = await cluster.masterForTag(t);
      perMaster.set(m, (perMaster.get(m) ?? 0) + 1);
      expect((await keysOn(m, `{${t}}:*`)).length, t).toBeGreaterThan(0);
    }
    expect([...perMaster.values()]).toEqual([2, 2, 2]);
  });

  it("fails with CROSSSLOT when the prefix is not a hash tag", async () => {
    const { producer } = clients();
    const queue = new Queue(`untagged-${randomUUID()}`, { connection: producer, prefix: "bull" });
    closers.push(() => queue.close());
    await expect(queue.add("weekly", { n: 1 })).rejects.toThrow(/CROSSSLOT/);
  });
});
