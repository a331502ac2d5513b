/**
 * Keeps every live job moving. A live job (queued, running, retrying) is
 * moved on by BullMQ: a worker fetches its BullMQ job, or BullMQ's stalled
 * check hands it to another worker. When BullMQ's job is gone, or finished
 * while the record still says live, nothing would ever move the job again.
 * Each sweep the reconciler looks at live jobs unchanged for at least one
 * interval (from the index of live jobs the transitions keep, so a sweep
 * never scans Redis) and repairs those:
 *
 * | BullMQ's job                                      | repair                                      |
 * | ------------------------------------------------- | ------------------------------------------- |
 * | missing                                           | queued again (`recovered`)                  |
 * | finished before the job's latest queueing (stale) | queued again (`recovered`)                  |
 * | completed, the record never told of an outcome    | queued again (`recovered`)                  |
 * | failed                                            | FAILED with BullMQ's reason (`abandoned`)   |
 * | waiting, delayed, active, ...                     | none: BullMQ will move it                   |
 *
 * Queued again means a new run with fresh attempts, under the same id and
 * log (a QUEUED event with phase "recovered"); an attempt still running
 * somewhere is fenced off. A job queued again `maxRecoveries` times ends
 * FAILED instead, so a fault that keeps losing it cannot loop. An index entry
 * whose record is gone is dropped. The first sweep of a deployment enters
 * the live jobs made before the index existed (through the tenants' indexes,
 * once: a mark key says it is done).
 *
 * Leader-free: every worker process runs one, and each repair is one script
 * guarded by what the sweep saw (the job's score in the index, BullMQ's job
 * absent or finished at the same time), so of several reconcilers that saw
 * the same job, one repairs it and the others change nothing. Each repair
 * counts in `reports.reconciler.repairs` and logs one line.
 */
import type { Queue } from "bullmq";
import type { Logger } from "pino";
import { type JobView, liveStates, type ReportType, terminalStates } from "../domain/job.js";
import type { RedisClient } from "../queue/connections.js";
import { decodeRecord, recordField } from "../queue/job-record.js";
import type { Keys } from "../queue/keys.js";
import type { QueueChangeResult, QueueTransitions } from "../queue/queue-transitions.js";
import { loadLuaScript } from "../queue/scripts/load.js";
import type { BullJobSpec } from "../queue/submitter.js";
import { type RepairCause, type RepairKind, reportMetrics } from "../telemetry/metrics.js";

const dropEntryScript = loadLuaScript("drop-live-entry");

/** Whether a record's state (as read) is a live one. */
function isLive(state: unknown): boolean {
  return typeof state === "string" && (liveStates as readonly string[]).includes(state);
}

/** How often one job may be queued again before the reconciler fails it. */
export const maxRecoveries = 3;

/** Live jobs looked at per sweep, at most. */
const sweepLimit = 1000;

/** A periodic sweeper. */
export interface Reconciler {
  /** Runs one sweep now (also what the timer does); resolves with the repairs made. */
  sweep(): Promise<number>;
  start(): void;
  close(): Promise<void>;
}

/** What the sweep saw of a job's BullMQ job. */
type BullView =
  | { kind: "missing" }
  | { kind: "pending" }
  | {
      kind: "completed" | "failed";
      /** When BullMQ's job was added (ms): before the job's latest queueing, it is a stale one. */
      timestamp: number;
      finishedOn: string;
      failedReason: string;
    };

/** A repair decided for one job. */
interface Repair {
  repair: RepairKind;
  cause: RepairCause;
  reason: string;
}

/** Creates the reconciler. */
export function createReconciler(deps: {
  redis: RedisClient;
  keys: Keys;
  queues: Record<ReportType, Queue>;
  queueTransitions: QueueTransitions;
  /** What BullMQ is given for a job queued again. */
  bullJob: (job: JobView) => BullJobSpec;
  /** Sweep interval (ms). */
  intervalMs: number;
  /** Jobs unchanged for at least this long are looked at (ms); the interval by default. */
  minAgeMs?: number;
  logger: Logger;
}): Reconciler {
  const { redis, keys, queues, queueTransitions, bullJob, intervalMs, logger } = deps;
  const minAgeMs = deps.minAgeMs ?? intervalMs;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;
  // Where the previous sweep stopped in the index (oldest first), so that a
  // long index is covered over several sweeps rather than its head each time.
  let offset = 0;

  /** The live jobs unchanged since `now - minAgeMs` or longer, with their scores. */
  const candidates = async (now: number): Promise<Array<[string, string]>> => {
    const raw = await redis.zrangebyscore(
      keys.live,
      "-inf",
      now - minAgeMs,
      "WITHSCORES",
      "LIMIT",
      offset,
      sweepLimit,
    );
    offset = raw.length / 2 < sweepLimit ? 0 : offset + sweepLimit;
    const out: Array<[string, string]> = [];
    for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i] as string, raw[i + 1] as string]);
    return out;
  };

  /** BullMQ's view of each job (one pipeline). */
  const bullViews = async (jobs: JobView[]): Promise<BullView[]> => {
    const pipeline = redis.pipeline();
    for (const job of jobs) {
      const queue = queues[job.reportType];
      pipeline.hmget(queue.toKey(job.id), "timestamp", "finishedOn", "failedReason");
      pipeline.zscore(queue.toKey("completed"), job.id);
      pipeline.zscore(queue.toKey("failed"), job.id);
    }
    const replies = (await pipeline.exec()) ?? [];
    return jobs.map((_, i) => {
      const [hashErr, hash] = replies[3 * i] ?? [];
      const [, completed] = replies[3 * i + 1] ?? [];
      const [, failed] = replies[3 * i + 2] ?? [];
      if (hashErr) throw hashErr;
      const [timestamp, finishedOn, failedReason] = hash as (string | null)[];
      if (timestamp === null || timestamp === undefined) return { kind: "missing" };
      if (finishedOn === null || finishedOn === undefined) return { kind: "pending" };
      if (completed === null && failed === null) return { kind: "pending" };
      return {
        kind: failed !== null ? "failed" : "completed",
        timestamp: Number(timestamp),
        finishedOn,
        failedReason: failedReason ?? "",
      };
    });
  };

  /** The repair a job needs, if any (the table at the top of this file). */
  const decide = (job: JobView, bull: BullView): Repair | undefined => {
    switch (bull.kind) {
      case "pending":
        return undefined;
      case "missing":
        return {
          repair: "requeued",
          cause: "bullmq_job_missing",
          reason: "the queue lost the job; queued again",
        };
      case "completed":
      case "failed": {
        if (bull.timestamp < (job.requeuedAt ?? job.createdAt)) {
          return {
            repair: "requeued",
            cause: "bullmq_job_stale",
            reason: "the queue held only an earlier run of the job; queued again",
          };
        }
        if (bull.kind === "completed") {
          return {
            repair: "requeued",
            cause: "bullmq_job_completed",
            reason: "the queue finished the job without an outcome; queued again",
          };
        }
        return {
          repair: "failed",
          cause: "bullmq_job_failed",
          reason: bull.failedReason
            ? `the queue gave up on the job: ${bull.failedReason}`
            : "the queue gave up on the job",
        };
      }
    }
  };

  /**
   * Applies one repair, guarded by what the sweep saw; returns the repair
   * made (a job queued again too often is failed instead), or undefined when
   * the job moved on meanwhile.
   */
  const apply = async (
    job: JobView,
    score: string,
    bull: BullView,
    planned: Repair,
  ): Promise<Repair | undefined> => {
    const at = Date.now();
    const seen =
      bull.kind === "completed" || bull.kind === "failed"
        ? { finishedOn: bull.finishedOn }
        : "absent";
    const recoveries = (job.recoveries ?? 0) + 1;
    let repair = planned;
    let result: QueueChangeResult;
    if (planned.repair === "requeued" && recoveries <= maxRecoveries) {
      result = await queueTransitions.change({
        job,
        name: "recovered",
        input: { at, reason: planned.reason, recoveries },
        remove: "required",
        // A run_at still ahead is kept: BullMQ delays the job until then.
        add: { spec: bullJob(job), at },
        score,
        bull: seen,
      });
    } else {
      if (planned.repair === "requeued") {
        repair = {
          ...planned,
          repair: "failed",
          reason: `the queue lost the job ${maxRecoveries} times; given up`,
        };
      }
      result = await queueTransitions.change({
        job,
        name: "abandoned",
        input: {
          attempt: job.attemptsMade,
          progress: job.progress,
          phase: job.phase,
          at,
          reason: repair.reason,
        },
        remove: "no",
        score,
        bull: seen,
      });
    }
    return result.kind === "applied" ? repair : undefined;
  };

  const sweepOnce = async (): Promise<number> => {
    const found = await candidates(Date.now());
    if (found.length === 0) return 0;
    const pipeline = redis.pipeline();
    for (const [id] of found) pipeline.hgetall(keys.job(id));
    const records = (await pipeline.exec()) ?? [];
    const jobs: Array<{ job: JobView; score: string }> = [];
    let repaired = 0;
    for (const [i, [id, score]] of found.entries()) {
      const [err, raw] = records[i] ?? [];
      if (err) throw err;
      const job = decodeRecord(raw as Record<string, string>);
      if (job !== undefined && !terminalStates.has(job.state)) {
        jobs.push({ job, score });
        continue;
      }
      // An entry whose record is gone (deleted by hand, say) or ended (an
      // entry the backfill made as the job ended): nothing to move on.
      if ((await dropEntryScript.run(redis, [keys.live], [id, score])) !== 1) continue;
      if (job !== undefined) continue;
      reportMetrics().repaired(undefined, "dropped", "record_missing");
      logger.warn(
        { job_id: id, repair: "dropped", cause: "record_missing" },
        "reconciler repaired job",
      );
      repaired++;
    }
    const views = await bullViews(jobs.map((j) => j.job));
    for (const [i, { job, score }] of jobs.entries()) {
      const bull = views[i] as BullView;
      const planned = decide(job, bull);
      if (planned === undefined) continue;
      const repair = await apply(job, score, bull, planned);
      if (repair === undefined) continue;
      repaired++;
      reportMetrics().repaired(job.reportType, repair.repair, repair.cause);
      logger.warn(
        {
          job_id: job.id,
          tenant: job.tenant,
          report_type: job.reportType,
          state: job.state,
          repair: repair.repair,
          cause: repair.cause,
          reason: repair.reason,
        },
        "reconciler repaired job",
      );
    }
    return repaired;
  };

  /**
   * Once per deployment: enters in the index the live jobs made before it
   * existed (found through the tenants' indexes). The mark is set at the
   * end, so a process stopped half-way leaves it to the next; several at
   * once only add the same entries (NX).
   */
  let backfilled = false;
  const backfill = async () => {
    if (backfilled || (await redis.exists(keys.liveBackfilled)) === 1) {
      backfilled = true;
      return;
    }
    const now = Date.now();
    let added = 0;
    for (const tenant of await redis.smembers(keys.tenants)) {
      for (let start = 0; ; start += 500) {
        const ids = await redis.zrange(keys.tenantIndex(tenant), start, start + 499);
        if (ids.length === 0) break;
        const states = redis.pipeline();
        for (const id of ids) states.hget(keys.job(id), recordField.state);
        const replies = (await states.exec()) ?? [];
        const live = ids.filter((_, i) => isLive(replies[i]?.[1]));
        if (live.length === 0) continue;
        const entries = redis.pipeline();
        for (const id of live) entries.zadd(keys.live, "NX", now, id);
        for (const [err, n] of (await entries.exec()) ?? []) {
          if (err) throw err;
          added += Number(n);
        }
      }
    }
    await redis.set(keys.liveBackfilled, String(now));
    backfilled = true;
    if (added > 0)
      logger.info({ jobs: added }, "reconciler indexed live jobs made before the index");
  };

  const sweep = () => {
    running ??= (async () => {
      try {
        await backfill();
        return await sweepOnce();
      } catch (err) {
        logger.warn(
          { err: err instanceof Error ? err.message : String(err) },
          "reconciler sweep failed; will retry",
        );
        return 0;
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  return {
    sweep,
    start() {
      timer = setInterval(() => void sweep(), intervalMs);
      timer.unref();
    },
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
