/**
 * Sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis 7.0) through ioredis 5.11.1's
 * Cluster client on the shared test cluster. With `shardedSubscribers: true`
 * the client keeps one subscriber connection per master that serves a
 * subscribed channel, routes each SSUBSCRIBE by the channel's slot and emits
 * `smessage`. Without it, SSUBSCRIBE goes to one random node: it never
 * settles for a channel that node does not serve (ioredis swallows the MOVED)
 * and no `smessage` is ever emitted, even where it succeeded.
 */
import { randomUUID } from "node:crypto";
import type { Cluster } from "ioredis";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import { pickShardTags } from "../../src/queue/shard-tags.js";
import { attachRedisCluster, type ClusterNode } from "../helpers/redis-cluster.js";
import { waitFor } from "../helpers/wait-for.js";

const cluster = attachRedisCluster(inject("redisClusterNodes"));
afterAll(() => cluster.close());

/** Names of the client connections on `node` whose last command was `cmd`. */
async function clientsRunning(node: ClusterNode, cmd: string): Promise<string[]> {
  const list = String(await node.admin.call("CLIENT", "LIST"));
  return list
    .split("\n")
    .filter((l) => new RegExp(`\\bcmd=${cmd}\\b`).test(l))
    .map((l) => /\bname=(\S*)/.exec(l)?.[1] ?? "");
}

describe("sharded pub/sub through an ioredis Cluster client", () => {
  const opened: Cluster[] = [];
  afterEach(() => {
    for (const c of opened.splice(0)) c.disconnect();
  });
  const client = (options: Parameters<typeof cluster.client>[0] = {}) => {
    const c = cluster.client(options);
    opened.push(c);
    return c;
  };

  it("delivers every shard's messages once, in order, over one subscriber connection per master", async () => {
    const run = randomUUID().slice(0, 8);
    // Six channels, two per master: the picked shard tags.
    const channels = pickShardTags(6, { prefix: `p${run}-` }).map((t) => `{${t}}:events`);
    const subscriber = client({ shardedSubscribers: true });
    const publisher = client();
    const got = new Map<string, string[]>();
    subscriber.on("smessage", (channel: string, message: string) => {
      got.set(channel, [...(got.get(channel) ?? []), message]);
    });
    for (const ch of channels) await subscriber.ssubscribe(ch);
    for (let i = 0; i < 5; i++) {
      for (const ch of channels) expect(await publisher.spublish(ch, `m${i}`)).toBe(1);
    }
    await waitFor(() => channels.every((ch) => got.get(ch)?.length === 5), {
      what: "every message",
    });
    for (const ch of channels) expect(got.get(ch)).toEqual(["m0", "m1", "m2", "m3", "m4"]);

    // One ssubscriber connection on each master, whatever the number of channels.
    for (const node of cluster.nodes) {
      const subs = await clientsRunning(node, "ssubscribe");
      expect(subs, node.address).toEqual(["ioredis-cluster(ssubscriber)"]);
    }
    // SUNSUBSCRIBE routes by slot too: the shard stops delivering.
    const [first = ""] = channels;
    await subscriber.sunsubscribe(first);
    expect(await publisher.spublish(first, "late")).toBe(0);
  });

  it("opens subscriber connections only to the masters of subscribed channels", async () => {
    const tag = `one-${randomUUID()}`;
    const owner = await cluster.masterForTag(tag);
    const subscriber = client({
      shardedSubscribers: true,
      redisOptions: { connectionName: `only-${tag}` },
    });
    await subscriber.ssubscribe(`{${tag}}:events`);
    for (const node of cluster.nodes) {
      const mine = (await clientsRunning(node, "ssubscribe")).filter((n) => n.includes(tag));
      expect(mine, node.address).toHaveLength(node === owner ? 1 : 0);
    }
  });

  it("takes SPUBLISH from a Lua script to a channel of the script's slot, never of another", async () => {
    const tag = `lua-${randomUUID()}`;
    let other = `lua-${randomUUID()}`;
    while ((await cluster.masterForTag(other)) === (await cluster.masterForTag(tag))) {
      other = `lua-${randomUUID()}`;
    }
    const subscriber = client({ shardedSubscribers: true });
    const publisher = client();
    const got: string[] = [];
    subscriber.on("smessage", (_channel: string, message: string) => got.push(message));
    await subscriber.ssubscribe(`{${tag}}:events`);
    // What the event scripts do with PUBLISH today: append, then announce, in one script.
    const appendAndAnnounce =
      "redis.call('rpush', KEYS[1], ARGV[2]) return redis.call('spublish', ARGV[1], ARGV[2])";
    expect(
      await publisher.eval(appendAndAnnounce, 1, `{${tag}}:log`, `{${tag}}:events`, "e1"),
    ).toBe(1);
    await waitFor(() => got.includes("e1"), { what: "the script's message" });
    await expect(
      publisher.eval(appendAndAnnounce, 1, `{${tag}}:log`, `{${other}}:events`, "e2"),
    ).rejects.toThrow(/non local|hash slot|CROSSSLOT/i);
  });

  it("refuses channels of two slots in one SSUBSCRIBE", async () => {
    const subscriber = client({ shardedSubscribers: true });
    await expect(subscriber.ssubscribe("{a}:x", "{b}:x")).rejects.toThrow(/CROSSSLOT/);
  });

  it("without shardedSubscribers, emits no smessage and leaves SSUBSCRIBE pending off its node", async () => {
    const plain = client();
    const publisher = client();
    let emitted = 0;
    plain.on("smessage", () => emitted++);
    const channels = pickShardTags(3, { prefix: `q${randomUUID().slice(0, 8)}-` }).map(
      (t) => `{${t}}:events`,
    );
    // One channel per master; settle what settles.
    const outcomes = channels.map((ch) => {
      const o = { settled: false };
      plain.ssubscribe(ch).then(
        () => {
          o.settled = true;
        },
        () => {
          o.settled = true;
        },
      );
      return o;
    });
    // The plain subscriber connection is on one node: that node's channel subscribes.
    const reached = await waitFor(
      async () => {
        const n = await Promise.all(channels.map((ch) => publisher.spublish(ch, "hello")));
        return n.some((x) => x === 1) && n;
      },
      { what: "the channel of the subscriber's node to be subscribed" },
    );
    expect(reached.filter((x) => x === 1)).toHaveLength(1);
    // Once more on the same connection: its reply comes after every earlier reply and
    // after the messages published above, so all of them have been handled by now.
    const served = channels[reached.indexOf(1)] ?? "";
    await plain.ssubscribe(served);
    expect(emitted).toBe(0);
    expect(outcomes.filter((o) => !o.settled)).toHaveLength(2);
  });
});
