/**
 * The contract tests (test/helpers/contract-suite.ts) on the run's single
 * Redis with QUEUE_SHARDS=4: every key of a job carries its shard's tag, and
 * the bounds split over the shards.
 */
import { Redis } from "ioredis";
import { afterAll, inject } from "vitest";
import { describeContract } from "../helpers/contract-suite.js";
import { scanKeys } from "../helpers/redis-keys.js";

const redis = new Redis(inject("redisUrl"));
afterAll(() => {
  redis.disconnect();
});

describeContract({
  name: "a single Redis with QUEUE_SHARDS=4",
  env: () => ({ QUEUE_SHARDS: "4" }),
  shards: 4,
  cluster: false,
  scan: (pattern) => scanKeys(redis, pattern),
});
