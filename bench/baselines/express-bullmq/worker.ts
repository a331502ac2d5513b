/**
 * The naive baseline's worker: a BullMQ Worker that runs the same report
 * generators as the service (same phases: started 5, fetch-data 40, render
 * 80, completed 100, each after REPORT_PHASE_DELAY_MS of simulated work),
 * XADDs one event per phase to the job's stream, and writes the report file
 * the way a hand-written worker would (mkdir, writeFile). BullMQ keeps the
 * state; retries are BullMQ's own.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { type Job, Worker } from "bullmq";
import { Redis } from "ioredis";
import type { ReportGenerator } from "../../../src/worker/generator.js";
import { createCustomReport } from "../../../src/worker/generators/custom-report.js";
import { createMonthlyReport } from "../../../src/worker/generators/monthly-report.js";
import { createWeeklyReport } from "../../../src/worker/generators/weekly-report.js";
import type { BaselineJobData } from "./api.js";
import { type BaselineConfig, baselineQueueName, eventStreamKey } from "./config.js";

/** What a completed job returns (BullMQ stores it as the job's return value). */
export interface BaselineResult {
  path: string;
  sizeBytes: number;
}

/** The running worker. */
export interface BaselineWorker {
  /** Resolves once the worker is connected and taking jobs. */
  ready(): Promise<void>;
  /** Lets running jobs finish, then closes every connection. Idempotent. */
  close(): Promise<void>;
}

/** Creates and starts the worker. */
export function createBaselineWorker(config: BaselineConfig): BaselineWorker {
  const events = new Redis(config.redisUrl);
  events.on("error", () => undefined);
  const simulation = { phaseDelayMs: config.phaseDelayMs, failRate: 0 };
  const generators: Record<BaselineJobData["reportType"], ReportGenerator> = {
    weekly: createWeeklyReport(simulation),
    monthly: createMonthlyReport(simulation),
    custom: createCustomReport(simulation),
  };

  const emit = (jobId: string, fields: Record<string, string | number>) => {
    const args: string[] = [];
    for (const [k, v] of Object.entries(fields)) args.push(k, String(v));
    return events.xadd(eventStreamKey(config.prefix, jobId), "*", "time", Date.now(), ...args);
  };

  const process = async (
    job: Job<BaselineJobData, BaselineResult>,
    _token?: string,
    signal?: AbortSignal,
  ): Promise<BaselineResult> => {
    const id = job.id as string;
    try {
      await emit(id, { type: "started", progress: 5, phase: "started" });
      const output = await generators[job.data.reportType].generate(
        {
          jobId: id,
          userId: job.data.userId,
          reportType: job.data.reportType,
          filters: job.data.filters,
          attempt: job.attemptsMade + 1,
        },
        async (progress, phase) => {
          await emit(id, { type: "progress", progress, phase });
        },
        signal ?? new AbortController().signal,
      );
      const file = path.join(config.artifactDir, id, output.fileName);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, output.content);
      const sizeBytes =
        typeof output.content === "string"
          ? Buffer.byteLength(output.content)
          : output.content.byteLength;
      await emit(id, { type: "completed", progress: 100, phase: "completed", path: file });
      return { path: file, sizeBytes };
    } catch (err) {
      if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
        const message = err instanceof Error ? err.message : String(err);
        await emit(id, { type: "failed", progress: 0, phase: "failed", error: message });
      }
      throw err;
    }
  };

  const worker = new Worker<BaselineJobData, BaselineResult>(baselineQueueName, process, {
    connection: { url: config.redisUrl, maxRetriesPerRequest: null },
    prefix: config.prefix,
    concurrency: config.concurrency,
  });
  worker.on("error", () => undefined);
  let closing: Promise<void> | undefined;
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    close() {
      closing ??= worker.close().finally(() => events.disconnect());
      return closing;
    },
  };
}
