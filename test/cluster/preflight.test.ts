/**
 * The start-up check on a Redis Cluster looks at every master: each holds
 * acknowledged jobs, so one master without AOF refuses REQUIRE_AOF=true,
 * and the refusal names it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createConnectionSet } from "../../src/queue/connection-set.js";
import { capturedLogger } from "../helpers/captured-logger.js";
import { type RedisClusterHandle, startRedisCluster } from "../helpers/redis-cluster.js";

let cluster: RedisClusterHandle;
beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 });
});
afterAll(async () => {
  await cluster?.stop();
});

describe("the start-up check on a cluster", () => {
  it("checks every master and names the one that lacks AOF", async () => {
    const { logger, lines } = capturedLogger();
    const shards = await cluster.shards();
    const bad = shards.at(-1)?.master;
    if (bad === undefined) throw new Error("no master");
    const settings = {
      url: "redis://127.0.0.1",
      clusterNodes: cluster.startupNodes,
      requireAof: true,
      submitWaitAof: 0 as const,
    };
    const good = createConnectionSet(settings, logger);
    try {
      await good.ready(10_000);
    } finally {
      await good.close();
    }
    // One line per master on what it found.
    expect(lines.filter((l) => /appendonly yes/.test(String(l.msg)))).toHaveLength(3);

    await bad.admin.config("SET", "appendonly", "no");
    const refused = createConnectionSet(settings, logger);
    try {
      const err = await refused.ready(10_000).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).toMatch(new RegExp(`^127\\.0\\.0\\.1:${bad.port}: REQUIRE_AOF=true`));
      // The other masters have AOF: none of them is named.
      for (const s of shards.slice(0, -1)) expect(err?.message).not.toContain(`:${s.master.port}`);
    } finally {
      await refused.close();
    }
  });
});
