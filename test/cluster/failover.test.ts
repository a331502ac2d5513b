/**
 * Failover on a cluster of its own (3 masters, 1 replica each,
 * cluster-node-timeout 2000 ms): a SIGKILLed master's replica is promoted,
 * and what the service will rely on carries on: an ioredis Cluster client
 * (writes fail for a bounded window, never hang), data acknowledged by
 * WAIT, our LuaScript (the new master lacks the script: NOSCRIPT, then EVAL),
 * a BullMQ worker on the shard, and a sharded subscriber, which ioredis moves
 * to the new master. The killed node rejoins as a replica when restarted; a
 * master paused past the node timeout is failed over the same way.
 */
import { randomUUID } from "node:crypto";
import { type Job, Queue, Worker } from "bullmq";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLuaScript } from "../../src/queue/lua-script.js";
import {
  type ClusterNodeHandle,
  type RedisClusterHandle,
  startRedisCluster,
} from "../helpers/redis-cluster.js";
import { waitFor } from "../helpers/wait-for.js";

let cluster: RedisClusterHandle;
beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  console.info(`3+3 cluster started in ${cluster.startMs} ms`);
});
afterAll(async () => {
  await cluster?.stop();
});

/** A hash tag served by `master` now. */
async function tagOn(master: ClusterNodeHandle): Promise<string> {
  for (;;) {
    const tag = `f-${randomUUID()}`;
    if ((await cluster.masterForTag(tag)) === master) return tag;
  }
}

describe("failover on a 3+3 cluster", () => {
  it("starts with one replica in sync behind each master", async () => {
    const shards = await cluster.shards();
    expect(shards).toHaveLength(3);
    for (const s of shards) {
      expect(s.replicas).toHaveLength(1);
      const repl = await s.replicas[0]?.admin.info("replication");
      expect(repl).toContain(`master_port:${s.master.port}`);
      expect(repl).toContain("master_link_status:up");
    }
  });

  it("promotes the replica of a killed master, and clients, scripts, BullMQ and subscribers carry on", async () => {
    const shards = await cluster.shards();
    const victimShard = shards[0];
    if (victimShard === undefined) throw new Error("no shard");
    const victim = victimShard.master;
    const tag = await tagOn(victim);
    const client = cluster.client();
    const worker = cluster.client({ redisOptions: { maxRetriesPerRequest: null } });
    const subscriber = cluster.client({ shardedSubscribers: true });

    // Data acknowledged by the replica (WAIT 1) before the kill.
    const acked = await client
      .pipeline()
      .set(`{${tag}}:acked`, "yes")
      .call("WAIT", 1, 5_000)
      .exec();
    expect(acked?.[1]).toEqual([null, 1]);

    // A script cached on the master only: replicas do not get the script cache.
    const script = createLuaScript(`-- ${randomUUID()}\nreturn redis.call('incr', KEYS[1])`);
    const redis = client as unknown as Redis;
    expect(await script.run(redis, [`{${tag}}:n`], [])).toBe(1);
    const promotedLater = victimShard.replicas[0];
    expect(await promotedLater?.admin.call("SCRIPT", "EXISTS", script.sha)).toEqual([0]);

    // A BullMQ queue on the victim's shard, with a worker running.
    const prefix = `{${tag}}`;
    const queue = new Queue("reports", { connection: client, prefix });
    const done = new Set<string>();
    const bullWorker = new Worker("reports", async (job: Job) => job.data, {
      connection: worker,
      prefix,
    });
    bullWorker.on("completed", (job) => done.add(job.id ?? ""));
    bullWorker.on("error", () => {});
    const before = await queue.add("weekly", { n: 1 });
    await waitFor(() => done.has(before.id ?? ""), { what: "the job before the kill" });

    // A sharded subscriber on the victim's shard.
    const messages: string[] = [];
    let readyAfterKill = 0;
    subscriber.on("smessage", (_ch: string, m: string) => messages.push(m));
    const channel = `{${tag}}:events`;
    await subscriber.ssubscribe(channel);
    expect(await client.spublish(channel, "before")).toBe(1);
    await waitFor(() => messages.includes("before"), { what: "the message before the kill" });

    // A write started every 50 ms through the failover, whatever the earlier ones
    // are doing: each one succeeds or fails, none hangs.
    const writes: { at: number; ok: boolean; error?: string }[] = [];
    const pending: Promise<void>[] = [];
    let seq = 0;
    const write = () => {
      const at = Date.now();
      pending.push(
        client.set(`{${tag}}:w${seq++}`, "1").then(
          () => void writes.push({ at, ok: true }),
          (err: Error) => void writes.push({ at, ok: false, error: err.message }),
        ),
      );
    };
    const writer = setInterval(write, 50);
    const killedAt = Date.now();
    subscriber.on("subscribersReady", () => {
      readyAfterKill++;
    });
    const failover = await cluster.failover(victim);
    expect(failover.killed).toBe(victim);
    expect(failover.promoted).toBe(promotedLater);
    expect(victim.running).toBe(false);
    const after = await cluster.shards();
    expect(after.find((s) => s.master === failover.promoted)?.slots).toEqual(victimShard.slots);

    // The client's writes succeed again; the window of failures is bounded.
    await waitFor(() => writes.some((w) => w.ok && w.at > killedAt + failover.ms), {
      what: "a write after the failover",
    });
    clearInterval(writer);
    await Promise.all(pending);
    const failed = writes.filter((w) => !w.ok);
    const lastFailure = Math.max(killedAt, ...failed.map((w) => w.at));
    const errors = [...new Set(failed.map((w) => w.error?.replace(/\d+/g, "N")))];
    console.info(
      `failover: ${failover.ms} ms from SIGKILL to a healthy cluster; ${failed.length} of ` +
        `${writes.length} writes to the shard failed, started up to ${lastFailure - killedAt} ms ` +
        `after the kill (${errors.join("; ")})`,
    );
    expect(writes.filter((w) => w.at > lastFailure).every((w) => w.ok)).toBe(true);
    expect(await client.get(`{${tag}}:acked`)).toBe("yes");

    // The script runs on the new master: NOSCRIPT there, then EVAL.
    expect(await script.run(redis, [`{${tag}}:n`], [])).toBe(2);
    expect(await failover.promoted.admin.call("SCRIPT", "EXISTS", script.sha)).toEqual([1]);

    // The BullMQ worker processes a job added after the failover.
    const afterJob = await queue.add("weekly", { n: 2 });
    await waitFor(() => done.has(afterJob.id ?? ""), {
      timeoutMs: 20_000,
      what: "the job after the failover",
    });

    // The sharded subscriber was moved to the new master (and said so).
    await waitFor(async () => (await client.spublish(channel, "after")) === 1, {
      what: "the subscription on the promoted master",
    });
    await waitFor(() => messages.includes("after"), { what: "the message after the failover" });
    expect(readyAfterKill).toBeGreaterThan(0);

    await bullWorker.close();
    await queue.close();
  });

  it("takes a restarted former master back as a replica of the promoted one", async () => {
    const killed = cluster.nodes.find((n) => !n.running);
    if (killed === undefined) throw new Error("the previous test killed no node");
    const t0 = Date.now();
    await killed.restart();
    await cluster.waitUntilHealthy();
    console.info(`restart: the old master is a replica in sync after ${Date.now() - t0} ms`);
    const shard = (await cluster.shards()).find((s) => s.replicas.includes(killed));
    expect(shard, "the restarted node follows a master").toBeDefined();
    expect(String(await killed.admin.info("replication"))).toContain("role:slave");
  });

  it("fails over a master paused past cluster-node-timeout; resumed, it becomes a replica", async () => {
    const shards = await cluster.shards();
    // Not the first node: the helper asks the running nodes in order, and a paused one only times out.
    const shard = shards.find((s) => s.master !== cluster.nodes[0] && s.replicas.length > 0);
    if (shard === undefined) throw new Error("no master with a replica");
    const paused = shard.master;
    const t0 = Date.now();
    paused.pause();
    try {
      const replica = shard.replicas[0];
      await waitFor(async () => (await cluster.shards()).some((s) => s.master === replica), {
        timeoutMs: 30_000,
        what: "the paused master's replica to be promoted",
      });
    } finally {
      paused.resume();
    }
    console.info(`pause: replica promoted ${Date.now() - t0} ms after SIGSTOP`);
    await cluster.waitUntilHealthy();
    const now = await cluster.shards();
    expect(now.find((s) => s.master === shard.replicas[0])?.replicas).toEqual([paused]);
  });
});
