/**
 * One command per job id, pipelined. On a Redis Cluster a pipeline must stay
 * in one slot (ioredis refuses it otherwise), and jobs of different shards
 * are in different slots: there, one pipeline per shard, sent together.
 */
import type { ChainableCommander } from "ioredis";
import type { RedisClient } from "./connections.js";
import type { Keys } from "./keys.js";

/** A pipeline reply: the command's error or its value. */
export type PipelineReply = [Error | null, unknown];

/**
 * Adds `add(pipeline, id)` for each of `ids` and runs them; the replies come
 * in the order of `ids`. `keys` routes each id to its shard (keys.of).
 */
export async function perJobPipeline(
  redis: RedisClient,
  keys: Keys,
  ids: readonly string[],
  add: (pipeline: ChainableCommander, id: string) => void,
): Promise<PipelineReply[]> {
  if (ids.length === 0) return [];
  if (!redis.isCluster) {
    const pipeline = redis.pipeline();
    for (const id of ids) add(pipeline, id);
    return ((await pipeline.exec()) ?? []) as PipelineReply[];
  }
  const groups = new Map<string, number[]>();
  ids.forEach((id, i) => {
    const shard = keys.of(id).jobPrefix;
    const group = groups.get(shard);
    if (group === undefined) groups.set(shard, [i]);
    else group.push(i);
  });
  const out = new Array<PipelineReply>(ids.length);
  await Promise.all(
    [...groups.values()].map(async (indexes) => {
      const pipeline = redis.pipeline();
      for (const i of indexes) add(pipeline, ids[i] as string);
      const replies = ((await pipeline.exec()) ?? []) as PipelineReply[];
      indexes.forEach((i, j) => {
        out[i] = replies[j] ?? [new Error("no reply"), null];
      });
    }),
  );
  return out;
}
