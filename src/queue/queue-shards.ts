/**
 * The queue shards of a deployment: QUEUE_SHARDS key sets, each with its own
 * hash tag (shard-tags.ts spreads the tags' slots evenly, so masters get
 * equal shares), and the choice of a shard for a new job. A job lives in one
 * shard for its whole life: its id names the shard's tag (keys.ts
 * shardTagOf), so reads, watches, cancels and retries go straight to it.
 *
 * QUEUE_SHARDS=1 on a single Redis is the unsharded layout of before
 * sharding (no tags, ids without a tag); on a cluster every shard is tagged.
 */
import { createKeys, type Keys, shardJobId } from "./keys.js";
import { pickShardTags } from "./shard-tags.js";

/** The shards of one prefix. */
export interface QueueShards {
  /** Every shard's key set, by shard index (0 .. QUEUE_SHARDS-1). */
  readonly all: readonly Keys[];
  /**
   * The shard of a new job: for a submit with an idempotency key, a hash of
   * (tenant, key digest), so concurrent duplicates always meet in one shard
   * (one slot, one script); without a key, the shards in turn.
   */
  pick(tenant: string, keyDigest?: string): Keys;
  /** The id of a new job in `shard` from its random part. */
  jobId(shard: Keys, random: string): string;
  /**
   * The unsharded key set, when the shards are tagged on a single Redis:
   * jobs made before QUEUE_SHARDS went above 1 live there, so workers drain
   * its queues and ListJobs reads its indexes (no new job goes there). On a
   * cluster no such job can exist (its keys would span slots).
   */
  readonly legacy?: Keys;
}

/** The hash tags of `count` shards start with this (then a base-36 counter). */
export const shardTagPrefix = "s";

/** Creates the shards of `prefix`. */
export function createQueueShards(
  prefix: string,
  count: number,
  layout: { cluster?: boolean } = {},
): QueueShards {
  const tagged = layout.cluster === true || count > 1;
  const all = tagged
    ? pickShardTags(count, { prefix: shardTagPrefix }).map((tag) => createKeys(prefix, tag, layout))
    : [createKeys(prefix)];
  // Keyless submits go round the shards, starting anywhere, so that API
  // replicas do not all start on shard 0.
  let next = Math.floor(Math.random() * all.length);
  return {
    all,
    pick(tenant, keyDigest) {
      if (all.length === 1) return all[0] as Keys;
      if (keyDigest === undefined) {
        next = (next + 1) % all.length;
        return all[next] as Keys;
      }
      return all[fnv1a(`${tenant}\u0000${keyDigest}`) % all.length] as Keys;
    },
    jobId: (shard, random) => shardJobId(shard.tag, random),
    ...(tagged && layout.cluster !== true ? { legacy: createKeys(prefix) } : {}),
  };
}

/** FNV-1a, 32 bits: a fast, well-spread hash of a short string (the key digest is random already). */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
