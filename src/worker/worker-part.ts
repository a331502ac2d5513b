/**
 * The worker part of a process, built unstarted: a generator per report type,
 * the processor that runs attempts, the BullMQ workers that feed it, the
 * janitor that sweeps what expired and the reconciler that keeps every live
 * job moving.
 */
import type { Queue } from "bullmq";
import type { Logger } from "pino";
import type { RetentionConfig, WorkerConfig } from "../config/config.js";
import { deploymentArtifactDir } from "../domain/artifact-paths.js";
import type { JobView, ReportType } from "../domain/job.js";
import type { RedisClient } from "../queue/connections.js";
import type { JobReader } from "../queue/job-reader.js";
import type { Keys } from "../queue/keys.js";
import type { QueueTransitions } from "../queue/queue-transitions.js";
import type { BullJobSpec } from "../queue/submitter.js";
import type { TransitionApplier } from "../queue/transition-applier.js";
import { type ArtifactStore, createArtifactStore } from "./artifact-store.js";
import type { ReportGenerator } from "./generator.js";
import { createCustomReport } from "./generators/custom-report.js";
import { createMonthlyReport } from "./generators/monthly-report.js";
import { createWeeklyReport } from "./generators/weekly-report.js";
import { createJanitor, type Janitor } from "./janitor.js";
import { createProcessor } from "./processor.js";
import { createReconciler, type Reconciler } from "./reconciler.js";
import { createReportWorker, type ReportWorker } from "./report-worker.js";

/** What the worker part is built from. */
export interface WorkerPartDeps {
  /** The worker slice of the configuration. */
  settings: WorkerConfig;
  /** The retention slice: ages stamped on finished jobs, and the janitor's sweep. */
  retention: RetentionConfig;
  /** BullMQ's blocking connection (maxRetriesPerRequest: null), used by nothing else. */
  connection: RedisClient;
  /** A connection for cancel requests (subscriber mode), used by nothing else. */
  subscriber: RedisClient;
  /** The shared fail-fast command connection. */
  commands: RedisClient;
  keys: Keys;
  queues: Record<ReportType, Queue>;
  /**
   * The queue shards this process consumes and sweeps (WORKER_SHARDS), with
   * their queues; `keys` and `queues` alone by default.
   */
  shards?: ReadonlyArray<{ keys: Keys; queues: Record<ReportType, Queue> }>;
  /** QUEUE_SHARDS: how many shards the deployment has (splits each type's rate limit). */
  shardCount?: number;
  jobs: JobReader;
  /** Applies the job state transitions of attempts. */
  transitions: TransitionApplier;
  /** Applies transitions with BullMQ's side (the reconciler's repairs). */
  queueTransitions: QueueTransitions;
  /** What BullMQ is given for a job (the reconciler queues jobs again). */
  bullJob: (job: JobView) => BullJobSpec;
  /** Replaces built-in generators per report type (tests). */
  generators?: Partial<Record<ReportType, ReportGenerator>>;
  logger: Logger;
}

/** The built, unstarted worker part. */
export interface WorkerPart {
  readonly worker: ReportWorker;
  readonly janitor: Janitor;
  readonly reconciler: Reconciler;
  /** The deployment's report store (its `close` seals this process's open segment). */
  readonly artifacts: ArtifactStore;
  /** Starts fetching jobs, sweeping and reconciling. */
  start(): Promise<void>;
}

/** Builds the worker part (not started). */
export function createWorkerPart(deps: WorkerPartDeps): WorkerPart {
  const { settings, retention, commands, keys, logger } = deps;
  const shards = deps.shards ?? [{ keys, queues: deps.queues }];
  const generators: Record<ReportType, ReportGenerator> = {
    weekly: createWeeklyReport(settings.simulation),
    monthly: createMonthlyReport(settings.simulation),
    custom: createCustomReport(settings.simulation),
    ...deps.generators,
  };
  // This deployment's own folder under ARTIFACT_DIR: its janitor sweeps nothing else.
  const artifactDir = deploymentArtifactDir(settings.artifactDir, keys.prefix);
  const artifacts = createArtifactStore(
    artifactDir,
    settings.reportSegments ? {} : { segments: false },
  );
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
    shards: shards.map((s) => s.keys),
    shardCount: deps.shardCount,
    processor,
    settings,
    logger,
  });
  const janitor = createJanitor({
    redis: commands,
    keys,
    queues: deps.queues,
    shards,
    artifacts,
    artifactDir,
    // An attempt's SUCCEEDED follows its append within its lock's life, plus a margin.
    segmentGraceMs: settings.lockDurationMs + 15 * 60_000,
    settings: retention,
    logger,
  });
  // One per shard: each keeps its shard's live index.
  const reconcilers = shards.map((shard) =>
    createReconciler({
      redis: commands,
      keys: shard.keys,
      queues: shard.queues,
      queueTransitions: deps.queueTransitions,
      bullJob: deps.bullJob,
      intervalMs: settings.reconcileIntervalMs,
      logger,
    }),
  );
  const reconciler: Reconciler =
    reconcilers.length === 1
      ? (reconcilers[0] as Reconciler)
      : {
          async sweep() {
            let repaired = 0;
            for (const r of reconcilers) repaired += await r.sweep();
            return repaired;
          },
          start() {
            for (const r of reconcilers) r.start();
          },
          async close() {
            await Promise.all(reconcilers.map((r) => r.close()));
          },
        };
  return {
    worker,
    janitor,
    reconciler,
    artifacts,
    async start() {
      await worker.start();
      janitor.start();
      reconciler.start();
      logger.info({ concurrency: settings.concurrency }, "worker started");
    },
  };
}
