/**
 * One BullMQ queue per report type, so each type has its own concurrency and
 * rate limit. They share the process's command connection (BullMQ does not
 * block on a Queue's connection) and log their errors instead of crashing.
 */
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { type ReportType, reportTypes } from "../domain/job.js";
import { type Keys, queueNameFor } from "./keys.js";

/** BullMQ states counted for the reports.queue.depth gauge. */
const depthStates = ["waiting", "prioritized", "delayed", "active", "paused", "failed"] as const;

/** The queues of every report type. */
export interface ReportQueues {
  readonly byType: Record<ReportType, Queue>;
  /** Jobs per report type and BullMQ state, for the reports.queue.depth gauge. */
  depth(): Promise<Array<{ type: ReportType; state: string; count: number }>>;
  /** Closes every queue (not the connection, which belongs to the caller). */
  close(): Promise<void>;
}

/** Creates one queue per report type on `connection`, under the keys' BullMQ prefix. */
export function createReportQueues(deps: {
  connection: Redis;
  keys: Keys;
  logger: Logger;
}): ReportQueues {
  const { connection, keys, logger } = deps;
  const byType = Object.fromEntries(
    reportTypes.map((t) => {
      const q = new Queue(queueNameFor(t), { connection, prefix: keys.bullPrefix });
      q.on("error", (err) => logger.warn({ err: err.message }, "queue error"));
      return [t, q];
    }),
  ) as Record<ReportType, Queue>;
  return {
    byType,
    async depth() {
      const counts = await Promise.all(
        reportTypes.map((t) => byType[t].getJobCounts(...depthStates)),
      );
      return reportTypes.flatMap((type, i) =>
        depthStates.map((state) => ({ type, state, count: counts[i]?.[state] ?? 0 })),
      );
    },
    async close() {
      await Promise.all(Object.values(byType).map((q) => q.close()));
    },
  };
}
