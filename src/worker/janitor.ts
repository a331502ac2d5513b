/**
 * Removes what retention has expired, besides what Redis expires by itself
 * (job records, event streams and idempotency records carry TTLs): index
 * entries of expired jobs, their report files on disk, and finished BullMQ
 * jobs past their age (BullMQ otherwise drops them only when later jobs
 * finish), and the oldest finished jobs beyond RETENTION_*_COUNT. Runs in
 * worker processes, which own the artifact folder.
 */
import { readdir } from "node:fs/promises";
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { RetentionConfig } from "../config/config.js";
import type { ReportType } from "../domain/job.js";
import type { Keys } from "../queue/keys.js";
import { loadLuaScript } from "../queue/scripts/load.js";
import type { ArtifactStore } from "./artifact-store.js";
import { createLeftoverSweep } from "./attempt-leftovers.js";

const removeFinishedScript = loadLuaScript("remove-finished-job");

/** A periodic sweeper. */
export interface Janitor {
  /** Runs one sweep now (also what the timer does). */
  sweep(): Promise<void>;
  start(): void;
  close(): Promise<void>;
}

/** Creates the janitor. */
export function createJanitor(deps: {
  redis: Redis;
  keys: Keys;
  queues: Record<ReportType, Queue>;
  artifacts: ArtifactStore;
  artifactDir: string;
  /** Ages and counts to keep, and how often to sweep. */
  settings: Pick<
    RetentionConfig,
    "sweepMs" | "succeededMs" | "failedMs" | "succeededCount" | "failedCount"
  >;
  logger: Logger;
}): Janitor {
  const { redis, keys, queues, artifacts, artifactDir, settings, logger } = deps;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  // Files of ended jobs that no record points at: attempts that never published.
  const sweepLeftovers = createLeftoverSweep({ redis, keys, artifacts, artifactDir });

  const existing = async (ids: string[]): Promise<boolean[]> => {
    if (ids.length === 0) return [];
    const pipeline = redis.pipeline();
    for (const id of ids) pipeline.exists(keys.job(id));
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([err, n]) => err !== null || n === 1);
  };

  /**
   * Removes the members of sorted set `index` whose job record is gone,
   * oldest first (expired jobs are among the old ones), at most 5,000 looked
   * at per sweep.
   */
  const dropExpired = async (index: string) => {
    for (let start = 0; start < 5000; start += 500) {
      const ids = await redis.zrange(index, start, start + 499);
      if (ids.length === 0) break;
      const alive = await existing(ids);
      const gone = ids.filter((_, i) => !alive[i]);
      if (gone.length > 0) await redis.zrem(index, ...gone);
      start -= gone.length;
    }
  };

  const sweepIndexes = async () => {
    const indexes: string[] = [];
    let cursor = "0";
    do {
      const [next, found] = await redis.scan(cursor, "MATCH", keys.tenantIndex("*"), "COUNT", 500);
      cursor = next;
      indexes.push(...found);
    } while (cursor !== "0");
    for (const index of indexes) {
      await dropExpired(index);
    }
  };

  const sweepArtifacts = async () => {
    const dirs = await readdir(artifactDir).catch(() => [] as string[]);
    for (let i = 0; i < dirs.length; i += 200) {
      const chunk = dirs.slice(i, i + 200);
      const alive = await existing(chunk);
      await Promise.all(chunk.map((d, j) => (alive[j] ? undefined : artifacts.remove(d))));
    }
  };

  /**
   * Removes a finished job whole: record, events, BullMQ job, file. The
   * record and log go only while the job is still in the finished index, in
   * one script, so a job retried meanwhile is left alone. Index entries of
   * ListJobs go with the next sweep.
   */
  const removeJob = async (index: string, id: string) => {
    const type = (await removeFinishedScript.run(
      redis,
      [index, keys.job(id), keys.events(id)],
      [id],
    )) as ReportType | null;
    if (type === null) return;
    if (queues[type] !== undefined) await queues[type].remove(id).catch(() => 0);
    await artifacts.remove(id);
  };

  const sweepFinished = async () => {
    const limits = {
      succeeded: settings.succeededCount,
      failed: settings.failedCount,
    };
    for (const kind of ["succeeded", "failed"] as const) {
      const index = keys.finished(kind);
      // Entries of jobs that expired (or were retried away) by themselves.
      await dropExpired(index);
      // Beyond the count: the oldest finished jobs go, 1,000 per sweep at most.
      const limit = limits[kind];
      if (limit <= 0) continue;
      const excess = Math.min(1000, (await redis.zcard(index)) - limit);
      if (excess <= 0) continue;
      const oldest = await redis.zrange(index, 0, excess - 1);
      for (const id of oldest) await removeJob(index, id);
    }
  };

  const sweepQueues = async () => {
    for (const queue of Object.values(queues)) {
      await queue.clean(settings.succeededMs, 1000, "completed");
      await queue.clean(settings.failedMs, 1000, "failed");
    }
  };

  const sweep = () => {
    running ??= (async () => {
      try {
        await sweepFinished();
        await sweepIndexes();
        await sweepArtifacts();
        await sweepLeftovers();
        await sweepQueues();
      } catch (err) {
        logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          "retention sweep failed; will retry",
        );
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  return {
    sweep,
    start() {
      timer = setInterval(() => void sweep(), settings.sweepMs);
      timer.unref();
    },
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
