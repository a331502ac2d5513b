/**
 * Removes what retention has expired, besides what Redis expires by itself
 * (job records, event streams and idempotency records carry TTLs): index
 * entries of expired jobs, their report files on disk, and finished BullMQ
 * jobs past their age (BullMQ otherwise drops them only when later jobs
 * finish), and the oldest finished jobs beyond RETENTION_*_COUNT. Runs in
 * worker processes, which own the artifact folder. Report files are deleted
 * for missing records only while Redis holds this deployment's marker
 * (deployment-marker.ts): a Redis that restarted empty must not cost every
 * report. Also corrects the tenants' backlog sets (tenant-backlogs.ts).
 *
 * It deletes only reports of its own deployment: those in the deployment's
 * folder (artifact-paths.ts: report files `<job id>@<attempt tag>`, and the
 * job folders of older layouts) with no job record under its prefix. Another deployment sharing ARTIFACT_DIR has a folder of its own,
 * never looked into. A folder in the layout before deployment folders
 * (ARTIFACT_DIR/<job id>) is moved into the deployment's folder when its job
 * record is there under this prefix (then it is provably ours), and left
 * alone otherwise: it may be another deployment's.
 *
 * Segments (files holding many small reports, report-segments.ts) go by age
 * alone: once no append can land in one and every record that could name
 * one of its reports has expired (the longest retention plus a grace). A
 * record that goes sooner (count-based retention, RETENTION_*_COUNT, or its
 * TTL) makes its report unreachable at once; its bytes stay on disk until
 * the segment goes.
 */
import { readdir, rename, rm } from "node:fs/promises";
import type { Queue } from "bullmq";
import type { Cluster, Redis } from "ioredis";
import type { Logger } from "pino";
import type { RetentionConfig } from "../config/config.js";
import { artifactFolder, legacyArtifactDir, publishedEntry } from "../domain/artifact-paths.js";
import type { ReportType } from "../domain/job.js";
import type { RedisClient } from "../queue/connections.js";
import { recordField } from "../queue/job-record.js";
import type { Keys } from "../queue/keys.js";
import { perJobPipeline } from "../queue/per-job-pipeline.js";
import { loadLuaScript } from "../queue/scripts/load.js";
import { createTenantBacklogs } from "../queue/tenant-backlogs.js";
import type { ArtifactStore } from "./artifact-store.js";
import { createLeftoverSweep } from "./attempt-leftovers.js";
import { createDeploymentMarker } from "./deployment-marker.js";

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
  redis: RedisClient;
  /** The deployment's home keys: its marker (and the first shard when `shards` is not given). */
  keys: Keys;
  queues: Record<ReportType, Queue>;
  /**
   * The queue shards to sweep (their indexes, finished jobs, backlogs and
   * BullMQ queues); `keys` and `queues` alone by default. Record and report
   * sweeps cover every shard anyway: job ids name their shard.
   */
  shards?: ReadonlyArray<{ keys: Keys; queues: Record<ReportType, Queue> }>;
  /** The deployment's report store, rooted at `artifactDir`. */
  artifacts: ArtifactStore;
  /** The deployment's report folder (artifact-paths.ts deploymentArtifactDir). */
  artifactDir: string;
  /**
   * How long after a segment's last possible append (report-segments.ts)
   * its reports may still be named beyond the longest retention: an
   * attempt's SUCCEEDED comes after its append (the lock duration bounds
   * how late, plus a margin). 15 minutes by default.
   */
  segmentGraceMs?: number;
  /** Ages and counts to keep, and how often to sweep. */
  settings: Pick<
    RetentionConfig,
    "sweepMs" | "succeededMs" | "failedMs" | "succeededCount" | "failedCount"
  >;
  logger: Logger;
}): Janitor {
  const { redis, keys, artifacts, artifactDir, settings, logger } = deps;
  // A record names a report for at most its retention after SUCCEEDED.
  const segmentKeepMs =
    Math.max(settings.succeededMs, settings.failedMs) + (deps.segmentGraceMs ?? 15 * 60_000);
  const shards = deps.shards ?? [{ keys, queues: deps.queues }];
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let marking: Promise<unknown> | undefined;
  const marker = createDeploymentMarker({ redis, key: keys.deployment, artifactDir, logger });
  const backlogs = shards.map((shard) => createTenantBacklogs({ redis, keys: shard.keys, logger }));
  // Files of ended jobs that no record points at: attempts that never published.
  const sweepLeftovers = createLeftoverSweep({ redis, keys, artifacts });

  /** Whether each job's record exists; a failed read counts as `onError` (kept, or not adopted). */
  const existing = async (ids: string[], onError = true): Promise<boolean[]> => {
    if (ids.length === 0) return [];
    const replies = await perJobPipeline(redis, keys, ids, (p, id) => p.exists(keys.job(id)));
    return replies.map(([err, n]) => (err !== null ? onError : n === 1));
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

  const sweepIndexes = async (shard: Keys) => {
    const indexes: string[] = [];
    // On a cluster SCAN reads one node: each master is scanned.
    const nodes = redis.isCluster ? (redis as Cluster).nodes("master") : [redis as Redis];
    for (const node of nodes) {
      let cursor = "0";
      do {
        const [next, found] = await node.scan(
          cursor,
          "MATCH",
          shard.tenantIndex("*"),
          "COUNT",
          500,
        );
        cursor = next;
        indexes.push(...found);
      } while (cursor !== "0");
    }
    for (const index of indexes) {
      await dropExpired(index);
    }
  };

  const sweepArtifacts = async () => {
    if (!(await marker.check())) return;
    const stored = await artifacts.list();
    const ids = [...stored.keys()];
    for (let i = 0; i < ids.length; i += 200) {
      const chunk = ids.slice(i, i + 200);
      const alive = await existing(chunk);
      await Promise.all(
        chunk.map((id, j) => (alive[j] ? undefined : artifacts.remove(id, stored.get(id)?.tags))),
      );
    }
  };

  /** Moves folders of the older layout whose job is ours into the deployment's folder. */
  const adoptLegacyArtifacts = async () => {
    const root = legacyArtifactDir(artifactDir);
    const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
    const dirs = entries
      .filter((e) => e.isDirectory() && artifactFolder(root, e.name) !== undefined)
      .map((e) => e.name);
    for (let i = 0; i < dirs.length; i += 200) {
      const chunk = dirs.slice(i, i + 200);
      const ours = await existing(chunk, false);
      for (const [j, id] of chunk.entries()) {
        const from = artifactFolder(root, id);
        const to = artifactFolder(artifactDir, id);
        if (!ours[j] || from === undefined || to === undefined) continue;
        // A folder already there (written since) wins; the old one stays for the next sweep.
        await rename(from, to).catch(() => undefined);
      }
    }
  };

  /**
   * Removes a finished job whole: record, events, BullMQ job, file. The
   * record and log go only while the job is still in the finished index, in
   * one script, so a job retried meanwhile is left alone. Index entries of
   * ListJobs go with the next sweep.
   */
  const removeJob = async (index: string, id: string, queues: Record<ReportType, Queue>) => {
    // The published report's name, read first: the script removes the record.
    const published = await redis.hget(keys.job(id), recordField.resultPath);
    const type = (await removeFinishedScript.run(
      redis,
      [index, keys.job(id), keys.events(id)],
      [id],
    )) as ReportType | null;
    if (type === null) return;
    if (queues[type] !== undefined) await queues[type].remove(id).catch(() => 0);
    // Its folder (older layouts) and its published file; files of attempts
    // that never published go with this sweep's `sweepArtifacts` (no record).
    const tag = published ? publishedEntry(published) : undefined;
    await artifacts.remove(id, tag === undefined ? [] : [tag]);
    // Its folder in the older layout, if it still has one (the record was ours).
    const legacy = artifactFolder(legacyArtifactDir(artifactDir), id);
    if (legacy !== undefined) await rm(legacy, { recursive: true, force: true });
  };

  const sweepFinished = async (shard: { keys: Keys; queues: Record<ReportType, Queue> }) => {
    const limits = {
      succeeded: settings.succeededCount,
      failed: settings.failedCount,
    };
    for (const kind of ["succeeded", "failed"] as const) {
      const index = shard.keys.finished(kind);
      // Entries of jobs that expired (or were retried away) by themselves.
      await dropExpired(index);
      // Beyond the count: the oldest finished jobs go, 1,000 per sweep at most.
      const limit = limits[kind];
      if (limit <= 0) continue;
      const excess = Math.min(1000, (await redis.zcard(index)) - limit);
      if (excess <= 0) continue;
      const oldest = await redis.zrange(index, 0, excess - 1);
      for (const id of oldest) await removeJob(index, id, shard.queues);
    }
  };

  const sweepQueues = async (queues: Record<ReportType, Queue>) => {
    for (const queue of Object.values(queues)) {
      await queue.clean(settings.succeededMs, 1000, "completed");
      await queue.clean(settings.failedMs, 1000, "failed");
    }
  };

  const sweep = () => {
    running ??= (async () => {
      try {
        for (const shard of shards) {
          await sweepFinished(shard);
          await sweepIndexes(shard.keys);
        }
        for (const b of backlogs) await b.correct();
        await adoptLegacyArtifacts();
        await sweepArtifacts();
        await sweepLeftovers();
        await artifacts.removeExpiredSegments(segmentKeepMs);
        for (const shard of shards) await sweepQueues(shard.queues);
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
      // At once: marks a fresh deployment, and says now if Redis lost its data.
      marking = marker.check().catch((err: unknown) => {
        logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          "could not check the deployment marker; will retry",
        );
      });
      timer = setInterval(() => void sweep(), settings.sweepMs);
      timer.unref();
    },
    async close() {
      clearInterval(timer);
      await marking;
      await running;
    },
  };
}
