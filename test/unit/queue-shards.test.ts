/**
 * Queue shards (issue 13): the key layout of each shard, job ids that name
 * their shard, the shard choice, and the settings that configure them.
 */
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/config.js";
import { createKeys, type Keys, shardJobId, shardTagOf } from "../../src/queue/keys.js";
import { createQueueShards } from "../../src/queue/queue-shards.js";
import { keySlot } from "../../src/queue/shard-tags.js";

const random = "AbCdEfGhIjKlMnOpQrStUv"; // 22 characters, like a job id's random part

/** Every key of job `id` and of its tenant, as the submit and transition scripts name them. */
function keysOfJob(keys: Keys, id: string): string[] {
  const k = keys.of(id);
  return [
    k.job(id),
    k.events(id),
    k.eventChannel(id),
    k.bullJobLock("weekly", id),
    `${k.bullPrefix}:reports-weekly:wait`,
    k.idempotency("t", "d"),
    k.tenantIndex("t"),
    k.userIndex("t", "u"),
    k.finished("succeeded"),
    k.finished("failed"),
    k.live,
    k.liveBackfilled,
    k.submitRate("t"),
    k.tenantBacklog("t"),
    k.tenants,
    k.controlChannel,
    `${k.jobPrefix}${id}`,
  ];
}

describe("createKeys()", () => {
  it("keeps the unsharded layout of before sharding for QUEUE_SHARDS=1 on a single Redis", () => {
    const shards = createQueueShards("rpt", 1);
    expect(shards.all).toHaveLength(1);
    const keys = shards.all[0] as Keys;
    expect(keys.tag).toBeUndefined();
    expect(keysOfJob(keys, random)).toEqual([
      `rpt:job:${random}`,
      `rpt:events:${random}`,
      `rpt:ev:${random}`,
      `rpt:bull:reports-weekly:${random}:lock`,
      "rpt:bull:reports-weekly:wait",
      "rpt:idem:t:d",
      "rpt:idx:t",
      "rpt:idx:t:user:u",
      "rpt:finished:succeeded",
      "rpt:finished:failed",
      "rpt:live",
      "rpt:live:backfilled",
      "rpt:rate:t",
      "rpt:backlog:t",
      "rpt:tenants",
      "rpt:control",
      `rpt:job:${random}`,
    ]);
    expect(shards.jobId(keys, random)).toBe(random);
  });

  it("puts every key of a sharded job, BullMQ's included, in its shard's slot", () => {
    for (const cluster of [false, true]) {
      const shards = createQueueShards("rpt", 5, { cluster });
      for (const shard of shards.all) {
        const id = shards.jobId(shard, random);
        const keys = keysOfJob(shards.all[0] as Keys, id);
        expect(keys.every((k) => k.startsWith(`rpt:{${shard.tag}}:`))).toBe(true);
        expect(new Set(keys.map((k) => keySlot(k))).size).toBe(1);
      }
    }
  });

  it("routes a job id to its own shard's keys from any shard's key set", () => {
    const shards = createQueueShards("rpt", 3);
    const [a, b] = shards.all as [Keys, Keys];
    const id = shards.jobId(b, random);
    expect(a.of(id).live).toBe(b.live);
    expect(a.job(id)).toBe(b.job(id));
    expect(a.of(id).bullPrefix).toBe(b.bullPrefix);
    // An id of before sharding: its keys of then, on a single Redis...
    expect(a.job(random)).toBe(`rpt:job:${random}`);
    expect(a.of(random).live).toBe("rpt:live");
  });

  it("gives an id of before sharding a slot of its own on a cluster (no job lives there)", () => {
    const keys = createQueueShards("rpt", 3, { cluster: true }).all[0] as Keys;
    const all = keysOfJob(keys, random);
    expect(new Set(all.map((k) => keySlot(k))).size).toBe(1);
    expect(keys.job(random)).toBe(`rpt:{${random}}:job:${random}`);
  });

  it("refuses a tag that could break the key layout", () => {
    expect(() => createKeys("rpt", "a}b")).toThrow(RangeError);
    expect(() => createKeys("rpt", "A")).toThrow(RangeError);
  });
});

describe("shardTagOf()", () => {
  it("reads the tag of a sharded id and none from anything else", () => {
    expect(shardTagOf(shardJobId("s1eo", random))).toBe("s1eo");
    expect(shardTagOf(random)).toBeUndefined();
    expect(shardTagOf(`_${random}`)).toBeUndefined();
    expect(shardTagOf(`S1_${random}`)).toBeUndefined();
    expect(shardTagOf(`s1-${random}`)).toBeUndefined();
    expect(shardTagOf("")).toBeUndefined();
  });
});

describe("createQueueShards().pick()", () => {
  it("sends every duplicate of a (tenant, key) to one shard, and other keys over all shards", () => {
    const shards = createQueueShards("rpt", 8);
    const first = shards.pick("t1", "digest-1");
    for (let i = 0; i < 20; i++) expect(shards.pick("t1", "digest-1")).toBe(first);
    const used = new Set<Keys>();
    for (let i = 0; i < 400; i++) used.add(shards.pick("t1", `digest-${i}`));
    expect(used.size).toBe(8);
  });

  it("spreads keyless submits evenly: the shards in turn", () => {
    const shards = createQueueShards("rpt", 6);
    const counts = new Map<Keys, number>();
    for (let i = 0; i < 60; i++) {
      const s = shards.pick("t");
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    expect([...counts.values()]).toEqual([10, 10, 10, 10, 10, 10]);
  });
});

describe("loadConfig() for scaling out", () => {
  const problems = (env: Record<string, string>): string => {
    try {
      loadConfig(env);
    } catch (err) {
      if (err instanceof ConfigError) return err.message;
      throw err;
    }
    return "";
  };

  it("reads QUEUE_SHARDS, WORKER_SHARDS, REDIS_CLUSTER_NODES and SUBMIT_WAIT_REPLICAS", () => {
    const c = loadConfig({
      QUEUE_SHARDS: "8",
      WORKER_SHARDS: "0-2, 5,7",
      REDIS_CLUSTER_NODES: "redis-1:6379, 10.0.0.2:7000,[::1]:7001",
      SUBMIT_WAIT_REPLICAS: "1",
    });
    expect(c.redis.queueShards).toBe(8);
    expect(c.worker.shards).toEqual([0, 1, 2, 5, 7]);
    expect(c.redis.clusterNodes).toEqual([
      { host: "redis-1", port: 6379 },
      { host: "10.0.0.2", port: 7000 },
      { host: "::1", port: 7001 },
    ]);
    expect(c.redis.submitWaitReplicas).toBe(1);
    const d = loadConfig({});
    expect(d.redis).toMatchObject({ queueShards: 1, clusterNodes: [], submitWaitReplicas: 0 });
    expect(d.worker.shards).toBeUndefined();
  });

  it("names each bad setting in one line", () => {
    const text = problems({
      QUEUE_SHARDS: "4",
      WORKER_SHARDS: "2-9",
      REDIS_CLUSTER_NODES: "redis-1,redis-2:99999",
    });
    expect(text).toMatch(/WORKER_SHARDS: .*"2-9"/);
    expect(text).toMatch(/REDIS_CLUSTER_NODES: .*"redis-1"/);
    expect(text).toMatch(/REDIS_CLUSTER_NODES: .*"redis-2:99999"/);
    expect(problems({ QUEUE_SHARDS: "0" })).toMatch(/QUEUE_SHARDS/);
  });
});
