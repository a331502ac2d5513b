/**
 * The slot function and the shard-tag picker (bench/cluster/shard-tags.ts):
 * pure checks against known CRC16 values and the hash-tag rules, then the
 * same answers as the shared cluster's `CLUSTER KEYSLOT`, and tags that split
 * evenly over its masters, which plain names do not.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { afterAll, describe, expect, inject, it } from "vitest";
import {
  crc16,
  keySlot,
  pickShardTags,
  SLOT_COUNT,
  targetSlot,
} from "../../src/queue/shard-tags.js";
import { attachRedisCluster } from "../helpers/redis-cluster.js";

/** How many of `tags` each of `masters` equal contiguous slot ranges (as redis-cli makes them) holds. */
function perMaster(tags: string[], masters: number): number[] {
  const counts = new Array<number>(masters).fill(0);
  for (const t of tags) {
    const slot = keySlot(`{${t}}`);
    const m = Math.min(masters - 1, Math.floor((slot * masters) / SLOT_COUNT));
    counts[m] = (counts[m] ?? 0) + 1;
  }
  return counts;
}

describe("crc16() and keySlot()", () => {
  it("computes CRC16-XMODEM and the slots Redis documents", () => {
    // The check value of CRC16-XMODEM, and examples from the Redis Cluster specification.
    expect(crc16(Buffer.from("123456789"))).toBe(0x31c3);
    expect(keySlot("123456789")).toBe(12739);
    expect(keySlot("foo")).toBe(12182);
    expect(keySlot("")).toBe(0);
  });

  it("hashes only the first non-empty {tag}", () => {
    expect(keySlot("{user1000}.following")).toBe(keySlot("user1000"));
    expect(keySlot("{user1000}.followers")).toBe(keySlot("user1000"));
    // Only the first { and the first } after it count.
    expect(keySlot("foo{bar}{zap}")).toBe(keySlot("bar"));
    expect(keySlot("foo{{bar}}zap")).toBe(keySlot("{bar"));
    // An empty tag, or no closing brace: the whole key is hashed.
    expect(keySlot("foo{}{bar}")).toBe(crc16(Buffer.from("foo{}{bar}")) % SLOT_COUNT);
    expect(keySlot("foo{bar")).toBe(crc16(Buffer.from("foo{bar")) % SLOT_COUNT);
    // Bytes, not UTF-16 code units.
    expect(keySlot("{é}")).toBe(crc16(Buffer.from("é", "utf8")) % SLOT_COUNT);
  });
});

describe("pickShardTags()", () => {
  it("puts shard i exactly on the middle of the i-th of N equal slot ranges", () => {
    for (const n of [1, 2, 3, 7, 12, 64, 1000]) {
      const tags = pickShardTags(n);
      expect(new Set(tags).size).toBe(n);
      tags.forEach((t, i) => {
        expect(t).not.toMatch(/[{}]/);
        expect(keySlot(`{${t}}:any:key`)).toBe(targetSlot(i, n));
      });
    }
    expect([0, 1, 2].map((i) => targetSlot(i, 3))).toEqual([2730, 8192, 13653]);
  });

  it("gives every process the same tags, and another prefix other tags", () => {
    expect(pickShardTags(16)).toEqual(pickShardTags(16));
    const other = pickShardTags(16, { prefix: "reports-" });
    expect(other.every((t) => t.startsWith("reports-"))).toBe(true);
    other.forEach((t, i) => {
      expect(keySlot(`{${t}}`)).toBe(targetSlot(i, 16));
    });
  });

  it("spreads N shards over M masters with equal slot ranges within one of N/M", () => {
    const picked = new Map<number, string[]>();
    const tagsFor = (n: number) => picked.get(n) ?? picked.set(n, pickShardTags(n)).get(n) ?? [];
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 96 }), fc.integer({ min: 1, max: 12 }), (n, m) => {
        const counts = perMaster(tagsFor(n), m);
        return Math.max(...counts) - Math.min(...counts) <= 1;
      }),
      { numRuns: 200 },
    );
  });

  it("beats naive tags, which do not balance by themselves", () => {
    // The names one would write first: 12 shards over 3 masters.
    const naive = perMaster(
      Array.from({ length: 12 }, (_, i) => `shard-${i}`),
      3,
    );
    expect(Math.max(...naive) - Math.min(...naive)).toBeGreaterThan(1);
    expect(perMaster(pickShardTags(12), 3)).toEqual([4, 4, 4]);
  });

  it("rejects a count outside 1..16384 and braces in the prefix", () => {
    expect(() => pickShardTags(0)).toThrow(RangeError);
    expect(() => pickShardTags(16_385)).toThrow(RangeError);
    expect(() => pickShardTags(2.5)).toThrow(RangeError);
    expect(() => pickShardTags(2, { prefix: "{x" })).toThrow(/cannot contain/);
  });
});

describe("against the shared cluster", () => {
  const cluster = attachRedisCluster(inject("redisClusterNodes"));
  afterAll(() => cluster.close());

  it("agrees with CLUSTER KEYSLOT on plain, tagged, odd and binary keys", async () => {
    const keys: (string | Buffer)[] = [
      "foo",
      "{user1000}.following",
      "foo{}{bar}",
      "foo{{bar}}zap",
      "{a}{b}",
      "}{x}",
      "{é}:ünïcode",
      ...pickShardTags(6).map((t) => `{${t}}:job:1`),
      ...Array.from({ length: 40 }, () => randomBytes(1 + Math.floor(Math.random() * 24))),
    ];
    const [node] = cluster.nodes;
    for (const key of keys) {
      const redisSlot = Number(await node?.admin.call("CLUSTER", "KEYSLOT", key));
      expect(keySlot(key), String(key)).toBe(redisSlot);
    }
  });

  it("places 3, 6 and 12 picked shards evenly over the 3 masters", async () => {
    for (const n of [3, 6, 12]) {
      const masters = await Promise.all(pickShardTags(n).map((t) => cluster.masterForTag(t)));
      const counts = [...new Set(masters)].map((m) => masters.filter((x) => x === m).length);
      expect(counts, `${n} shards`).toEqual([n / 3, n / 3, n / 3]);
    }
  });
});
