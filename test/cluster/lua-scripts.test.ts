/**
 * Lua scripts on the shared test cluster: the script cache is per node, so
 * our LuaScript (src/queue/lua-script.ts) and ioredis' defineCommand load a
 * script on each master the first time it runs there (NOSCRIPT, then EVAL),
 * and again after the node lost its cache. A script may touch only keys of
 * its first key's slot; undeclared keys of that slot work, others fail. A
 * keyless command pipelined behind a script goes to the script's node.
 */
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createLuaScript } from "../../src/queue/lua-script.js";
import { attachRedisCluster, type ClusterNode } from "../helpers/redis-cluster.js";

const cluster = attachRedisCluster(inject("redisClusterNodes"));
afterAll(() => cluster.close());

/** 1 when `node` has the script `sha` cached. */
async function cached(node: ClusterNode, sha: string): Promise<number> {
  const [exists] = (await node.admin.call("SCRIPT", "EXISTS", sha)) as number[];
  return exists ?? 0;
}

/** `calls` of one command in a node's INFO commandstats. */
async function calls(node: ClusterNode, command: string): Promise<number> {
  const stats = await node.admin.info("commandstats");
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(stats)?.[1] ?? 0);
}

/** Two tags served by different masters. */
async function tagsOnTwoMasters(): Promise<[string, string, ClusterNode, ClusterNode]> {
  const a = `a-${randomUUID()}`;
  const ma = await cluster.masterForTag(a);
  for (;;) {
    const b = `b-${randomUUID()}`;
    const mb = await cluster.masterForTag(b);
    if (mb !== ma) return [a, b, ma, mb];
  }
}

describe("Lua scripts on a Redis Cluster", () => {
  it("LuaScript loads itself on each master it runs on, and again after a SCRIPT FLUSH", async () => {
    const client = cluster.client();
    // A fresh script: no node has it cached yet.
    const script = createLuaScript(
      `-- ${randomUUID()}\nredis.call('set', KEYS[1], ARGV[1]) return redis.call('get', KEYS[1])`,
    );
    // LuaScript takes a Redis; a Cluster has the same evalsha/eval (the service will widen the type).
    const redis = client as unknown as Redis;
    const [a, b, ma, mb] = await tagsOnTwoMasters();

    expect(await script.run(redis, [`{${a}}:k`], ["1"])).toBe("1");
    expect(await cached(ma, script.sha)).toBe(1);
    expect(await cached(mb, script.sha)).toBe(0);

    expect(await script.run(redis, [`{${b}}:k`], ["2"])).toBe("2");
    expect(await cached(mb, script.sha)).toBe(1);

    // What a failover to a replica, or a restart, looks like to the client: the cache is gone.
    await ma.admin.call("SCRIPT", "FLUSH");
    expect(await cached(ma, script.sha)).toBe(0);
    expect(await script.run(redis, [`{${a}}:k`], ["3"])).toBe("3");
    expect(await cached(ma, script.sha)).toBe(1);
    await client.quit();
  });

  it("defineCommand sends EVAL on each node connection's first use and survives a SCRIPT FLUSH", async () => {
    const client = cluster.client();
    const lua = `-- ${randomUUID()}\nreturn redis.call('incr', KEYS[1])`;
    client.defineCommand("bump", { numberOfKeys: 1, lua });
    const bump = (key: string) =>
      (client as unknown as { bump(k: string): Promise<number> }).bump(key);
    const [a, b, ma, mb] = await tagsOnTwoMasters();
    expect(await bump(`{${a}}:n`)).toBe(1);
    expect(await bump(`{${b}}:n`)).toBe(1);
    const sha = String(await ma.admin.call("SCRIPT", "LOAD", lua));
    expect(await cached(mb, sha)).toBe(1);
    await ma.admin.call("SCRIPT", "FLUSH");
    await mb.admin.call("SCRIPT", "FLUSH");
    // ioredis sent EVALSHA on this connection before: now NOSCRIPT, and it resends as EVAL.
    expect(await bump(`{${a}}:n`)).toBe(2);
    expect(await bump(`{${b}}:n`)).toBe(2);
    expect(await cached(ma, sha)).toBe(1);
    await client.quit();
  });

  it("lets a script read an undeclared key of its own slot, never one of another slot", async () => {
    const client = cluster.client();
    const [a, b] = await tagsOnTwoMasters();
    await client.set(`{${a}}:other`, "same-slot");
    const read = "return redis.call('get', ARGV[1])";
    expect(await client.eval(read, 1, `{${a}}:k`, `{${a}}:other`)).toBe("same-slot");
    await expect(client.eval(read, 1, `{${a}}:k`, `{${b}}:other`)).rejects.toThrow(
      /non local key|hash slot/i,
    );
    // Declared keys of two slots are refused before the script runs.
    await expect(client.eval("return 1", 2, `{${a}}:k`, `{${b}}:k`)).rejects.toThrow(/CROSSSLOT/);
    await client.quit();
  });

  it("pipelines a keyless WAIT behind a script to the script's master, NOSCRIPT included", async () => {
    const client = cluster.client();
    const source = `-- ${randomUUID()}\nreturn redis.call('set', KEYS[1], ARGV[1])`;
    const script = createLuaScript(source);
    const [a, , ma] = await tagsOnTwoMasters();
    const waitsBefore = await Promise.all(cluster.nodes.map((n) => calls(n, "wait")));

    // Not cached yet: EVALSHA fails with NOSCRIPT, WAIT still ran (on the same node).
    const first = await client
      .pipeline()
      .evalsha(script.sha, 1, `{${a}}:k`, "v")
      .call("WAIT", 0, 0)
      .exec();
    expect(String(first?.[0]?.[0])).toMatch(/^ReplyError: NOSCRIPT/);
    // So the script is resent as EVAL with its WAIT behind it (no replicas here: 0 acknowledged).
    const second = await client
      .pipeline()
      .eval(source, 1, `{${a}}:k`, "v")
      .call("WAIT", 0, 0)
      .exec();
    expect(second).toEqual([
      [null, "OK"],
      [null, 0],
    ]);
    const waitsAfter = await Promise.all(cluster.nodes.map((n) => calls(n, "wait")));
    const delta = cluster.nodes.map((_node, i) => (waitsAfter[i] ?? 0) - (waitsBefore[i] ?? 0));
    expect(delta).toEqual(cluster.nodes.map((n) => (n === ma ? 2 : 0)));
    await client.quit();
  });
});
