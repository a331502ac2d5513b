/**
 * One BullMQ queue per report type and queue shard, so each type has its own
 * concurrency and rate limit and each shard lives in one Redis Cluster slot.
 * They share the process's command connection (BullMQ does not block on a
 * Queue's connection) and log their errors instead of crashing.
 */
import { Queue } from "bullmq";
import type { Logger } from "pino";
import { type ReportType, reportTypes } from "../domain/job.js";
import type { RedisClient } from "./connections.js";
import { type Keys, queueNameFor } from "./keys.js";

/** BullMQ states counted for the reports.queue.depth gauge. */
const depthStates = ["waiting", "prioritized", "delayed", "active", "paused", "failed"] as const;

/** The queues of a shard's key set, by report type. */
export type QueuesOf = (keys: Keys) => Record<ReportType, Queue>;

/** The queues of every report type and shard. */
export interface ReportQueues {
  /** The queues of the first shard (`keys`): all of them when unsharded. */
  readonly byType: Record<ReportType, Queue>;
  /** The queues of `keys`' shard (made on first use). */
  of: QueuesOf;
  /** Jobs per report type and BullMQ state over the given shards, for the reports.queue.depth gauge. */
  depth(): Promise<Array<{ type: ReportType; state: string; count: number }>>;
  /** Closes every queue (not the connection, which belongs to the caller). */
  close(): Promise<void>;
}

/** How long close() waits for the queues' connection set-up to settle. */
const setUpGraceMs = 2000;

/**
 * Creates the queues on `connection`, under each shard's BullMQ prefix:
 * those of `keys` at once, the others' as asked for. `shards` (default:
 * `keys` alone) are the ones the depth gauge counts.
 */

export function createReportQueues(deps: {
  connection: RedisClient;
  keys: Keys;
  shards?: readonly Keys[];
  logger: Logger;
}): ReportQueues {
  const { connection, keys, logger } = deps;
  const byPrefix = new Map<string, Record<ReportType, Queue>>();
  const of: QueuesOf = (shard) => {
    let queues = byPrefix.get(shard.bullPrefix);
    if (queues === undefined) {
      queues = Object.fromEntries(
        reportTypes.map((t) => {
          const q = new Queue(queueNameFor(t), { connection, prefix: shard.bullPrefix });
          q.on("error", (err) => logger.warn({ err: err.message }, "queue error"));
          return [t, q];
        }),
      ) as Record<ReportType, Queue>;
      byPrefix.set(shard.bullPrefix, queues);
    }
    return queues;
  };
  const byType = of(keys);
  const shards = deps.shards ?? [keys];
  return {
    byType,
    of,
    async depth() {
      const totals = new Map<string, number>();
      for (const shard of shards) {
        const queues = of(shard);
        const counts = await Promise.all(
          reportTypes.map((t) => queues[t].getJobCounts(...depthStates)),
        );
        reportTypes.forEach((type, i) => {
          for (const state of depthStates) {
            const k = `${type}\u0000${state}`;
            totals.set(k, (totals.get(k) ?? 0) + (counts[i]?.[state] ?? 0));
          }
        });
      }
      return reportTypes.flatMap((type) =>
        depthStates.map((state) => ({
          type,
          state,
          count: totals.get(`${type}\u0000${state}`) ?? 0,
        })),
      );
    },
    async close() {
      const all = [...byPrefix.values()].flatMap((queues) => Object.values(queues));
      // A queue's connection set-up (BullMQ's INFO) may still be in flight:
      // let it settle first, while the queue's error listener is attached.
      // BullMQ's close removes that listener, and a set-up failing after it
      // (a cluster refusing commands as it closes) became an unhandled
      // rejection. Bounded: a Redis that does not answer does not hold the stop.
      await Promise.race([
        Promise.allSettled(all.map((q) => q.waitUntilReady())),
        new Promise((resolve) => setTimeout(resolve, setUpGraceMs).unref()),
      ]);
      await Promise.all(all.map((q) => q.close()));
    },
  };
}
