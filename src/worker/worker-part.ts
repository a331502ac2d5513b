/**
 * The worker part of a process, built unstarted: a generator per report type,
 * the processor that runs attempts, the BullMQ workers that feed it, and the
 * janitor that sweeps what expired.
 */
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { RetentionConfig, WorkerConfig } from "../config/config.js";
import type { ReportType } from "../domain/job.js";
import type { JobReader } from "../queue/job-reader.js";
import type { Keys } from "../queue/keys.js";
import type { TransitionApplier } from "../queue/transition-applier.js";
import { createArtifactStore } from "./artifact-store.js";
import type { ReportGenerator } from "./generator.js";
import { createCustomReport } from "./generators/custom-report.js";
import { createMonthlyReport } from "./generators/monthly-report.js";
import { createWeeklyReport } from "./generators/weekly-report.js";
import { createJanitor, type Janitor } from "./janitor.js";
import { createProcessor } from "./processor.js";
import { createReportWorker, type ReportWorker } from "./report-worker.js";

/** What the worker part is built from. */
export interface WorkerPartDeps {
  /** The worker slice of the configuration. */
  settings: WorkerConfig;
  /** The retention slice: ages stamped on finished jobs, and the janitor's sweep. */
  retention: RetentionConfig;
  /** BullMQ's blocking connection (maxRetriesPerRequest: null), used by nothing else. */
  connection: Redis;
  /** A connection for cancel requests (subscriber mode), used by nothing else. */
  subscriber: Redis;
  /** The shared fail-fast command connection. */
  commands: Redis;
  keys: Keys;
  queues: Record<ReportType, Queue>;
  jobs: JobReader;
  /** Applies the job state transitions of attempts. */
  transitions: TransitionApplier;
  /** Replaces built-in generators per report type (tests). */
  generators?: Partial<Record<ReportType, ReportGenerator>>;
  logger: Logger;
}

/** The built, unstarted worker part. */
export interface WorkerPart {
  readonly worker: ReportWorker;
  readonly janitor: Janitor;
  /** Starts fetching jobs and sweeping. */
  start(): Promise<void>;
}

/** Builds the worker part (not started). */
export function createWorkerPart(deps: WorkerPartDeps): WorkerPart {
  const { settings, retention, commands, keys, logger } = deps;
  const generators: Record<ReportType, ReportGenerator> = {
    weekly: createWeeklyReport(settings.simulation),
    monthly: createMonthlyReport(settings.simulation),
    custom: createCustomReport(settings.simulation),
    ...deps.generators,
  };
  const artifacts = createArtifactStore(settings.artifactDir);
  const processor = createProcessor({
    transitions: deps.transitions,
    jobs: deps.jobs,
    generators,
    artifacts,
    settings: { worker: settings },
    logger,
  });
  const worker = createReportWorker({
    connection: deps.connection,
    subscriber: deps.subscriber,
    commands,
    keys,
    processor,
    settings,
    logger,
  });
  const janitor = createJanitor({
    redis: commands,
    keys,
    queues: deps.queues,
    artifacts,
    artifactDir: settings.artifactDir,
    settings: retention,
    logger,
  });
  return {
    worker,
    janitor,
    async start() {
      await worker.start();
      janitor.start();
      logger.info({ concurrency: settings.concurrency }, "worker started");
    },
  };
}
