/**
 * Composes the parts for a mode and returns them unstarted, with one close()
 * that stops them in order. Tests build apps with this, exactly as main.ts
 * does. Each part is built from its slice of the configuration; every closer
 * is registered as its part is built, and close() runs them in reverse:
 * end watches → stop the server → close workers → close Redis → the probe port.
 */
import type { Logger } from "pino";
import { createApiPart, httpUrl } from "./api/api-part.js";
import { createReadiness } from "./api/readiness.js";
import type { Config } from "./config/config.js";
import { deploymentArtifactDir } from "./domain/artifact-paths.js";
import type { ReportType } from "./domain/job.js";
import { createEventHub, type EventHub } from "./events/event-hub.js";
import { createConnectionSet } from "./queue/connection-set.js";
import { createJobControl } from "./queue/job-control.js";
import { createJobLister } from "./queue/job-lister.js";
import { createJobReader } from "./queue/job-reader.js";
import type { Keys } from "./queue/keys.js";
import { createQueueShards } from "./queue/queue-shards.js";
import { createQueueTransitions } from "./queue/queue-transitions.js";
import { createEventLog } from "./queue/redis-event-log.js";
import { createReportQueues } from "./queue/report-queues.js";
import { createStorageHealth, type StorageHealth } from "./queue/storage-health.js";
import { bullJobSpec, createSubmitter } from "./queue/submitter.js";
import { createTransitionApplier } from "./queue/transition-applier.js";
import { createShutdown } from "./shutdown.js";
import { createLogger } from "./telemetry/logger.js";
import { reportMetrics } from "./telemetry/metrics.js";
import { createMetricsServer } from "./telemetry/metrics-server.js";
import { currentTelemetry } from "./telemetry/telemetry.js";
import type { ReportGenerator } from "./worker/generator.js";
import type { Janitor } from "./worker/janitor.js";
import type { Reconciler } from "./worker/reconciler.js";
import type { ReportWorker } from "./worker/report-worker.js";
import { createWorkerPart } from "./worker/worker-part.js";

/** Test and embedding hooks; production uses the defaults. */
export interface AppOptions {
  logger?: Logger;
  /** Replaces built-in generators per report type. */
  generators?: Partial<Record<ReportType, ReportGenerator>>;
  /** Overrides WORKER_LOCK_DURATION_MS. */
  lockDurationMs?: number;
  /** Overrides WORKER_STALLED_INTERVAL_MS. */
  stalledIntervalMs?: number;
}

/** A wired, unstarted service. */
export interface App {
  readonly config: Config;
  readonly logger: Logger;
  readonly keys: Keys;
  /** Set in api and all modes. */
  readonly hub?: EventHub;
  /** Set in worker and all modes. */
  readonly worker?: ReportWorker;
  /** Set in worker and all modes. */
  readonly janitor?: Janitor;
  /** Set in worker and all modes. */
  readonly reconciler?: Reconciler;
  /** Whether Redis answers (gRPC health, /readyz); checked from start() on. */
  readonly storageHealth: StorageHealth;
  /**
   * Connects, checks Redis, listens (api; and the metrics/probe port in every
   * mode) and starts fetching jobs (worker). Returns the API's and the metrics server's URLs.
   */
  start(): Promise<{ url?: string; port?: number; metricsUrl?: string }>;
  /** Stops in order: watches, server, workers, Redis. Idempotent; never throws. */
  close(): Promise<void>;
}

/** Builds an app for `config.mode`. */
export function createApp(config: Config, options: AppOptions = {}): App {
  const logger =
    options.logger ??
    createLogger(
      config.telemetry.logLevel,
      { mode: config.mode },
      { format: config.telemetry.logFormat },
    );
  const graceMs = config.worker.shutdownGraceMs;
  const shutdown = createShutdown({ logger, warnAfterMs: graceMs + 5000 });

  const redis = createConnectionSet(config.redis, logger);
  const commands = redis.commands;
  // QUEUE_SHARDS key sets; the first is the deployment's home (its marker).
  const shards = createQueueShards(config.redis.prefix, config.redis.queueShards, {
    cluster: redis.cluster,
  });
  const keys = shards.all[0] as Keys;
  // Short PING deadline: health must turn NOT_SERVING within seconds of Redis hanging.
  const storageHealth = createStorageHealth({
    redis: commands,
    intervalMs: 1000,
    timeoutMs: 1000,
    logger,
  });

  // The metrics and probe port (every mode): registered first, so it closes
  // last and probes and scrapes answer (not ready) while the rest drains. Its
  // /readyz is the API's readiness plus, in worker processes, running workers.
  const metricsServer = createMetricsServer({
    prometheus: currentTelemetry()?.prometheus,
    readiness: createReadiness({
      storage: storageHealth,
      shutdownSignal: shutdown.signal,
      workersRunning: () => worker === undefined || worker.worker.all.every((w) => w.isRunning()),
    }),
    logger,
  });
  shutdown.add("metrics server", () => metricsServer.close());
  shutdown.add("redis", () => redis.close());
  const instruments = reportMetrics();
  const stopObserving: Array<() => void> = [];
  shutdown.add("observers", () => {
    for (const stop of stopObserving.splice(0)) stop();
  });
  // Every key set holding jobs: the shards and, on a single Redis, the unsharded one of before.
  const holding = shards.legacy === undefined ? shards.all : [...shards.all, shards.legacy];
  const consumed = (indexes: number[] | undefined): Keys[] => {
    const picked = indexes?.map((i) => shards.all[i] as Keys) ?? [...shards.all];
    if (shards.legacy !== undefined && (indexes === undefined || indexes.includes(0))) {
      picked.push(shards.legacy);
    }
    return picked;
  };
  const queues = createReportQueues({ connection: commands, keys, shards: holding, logger });
  shutdown.add("queues", () => queues.close());

  const jobs = createJobReader({ redis: commands, keys });
  const log = createEventLog({ redis: commands, keys, maxLen: config.retention.eventStreamMaxLen });
  const transitions = createTransitionApplier({
    redis: commands,
    keys,
    settings: config.retention,
    logger,
  });
  const bullJobSettings = { worker: config.worker, retention: config.retention };
  const queueTransitions = createQueueTransitions({
    redis: commands,
    queues: queues.byType,
    queuesOf: queues.of,
    keys,
    transitions,
  });
  // Api and all modes. Registered before the workers, so it closes after them.
  const hub =
    config.mode === "worker"
      ? undefined
      : createEventHub({ subscriber: redis.open("subscriber"), keys, logger });
  if (hub) shutdown.add("hub", () => hub.close());

  const worker =
    config.mode === "api"
      ? undefined
      : createWorkerPart({
          settings: {
            ...config.worker,
            lockDurationMs: options.lockDurationMs ?? config.worker.lockDurationMs,
            stalledIntervalMs: options.stalledIntervalMs ?? config.worker.stalledIntervalMs,
          },
          retention: config.retention,
          connection: redis.open("worker"),
          subscriber: redis.open("subscriber"),
          commands,
          keys,
          queues: queues.byType,
          // WORKER_SHARDS, else every shard; the unsharded queues (jobs from
          // before sharding) go with shard 0.
          shards: consumed(config.worker.shards).map((shard) => ({
            keys: shard,
            queues: queues.of(shard),
          })),
          shardCount: shards.all.length,
          jobs,
          transitions,
          queueTransitions,
          bullJob: (job) => bullJobSpec(job, bullJobSettings),
          generators: options.generators,
          logger,
        });
  if (worker) {
    // Closed last of the worker's parts: the open report segment, once its appends are durable.
    shutdown.add("report segments", () => worker.artifacts.close());
    shutdown.add("janitor", () => worker.janitor.close());
    shutdown.add("reconciler", () => worker.reconciler.close());
    // Running jobs get the grace period, then are released back to the queue.
    shutdown.add("worker", () => worker.worker.close(graceMs), graceMs + 5000);
  }

  // Api and all modes (where the hub is). Registered after the workers, so the
  // server stops taking calls before they stop.
  const api =
    hub === undefined
      ? undefined
      : createApiPart({
          settings: config.api,
          auth: config.auth,
          maxWatchesPerTenant: config.limits.tenantMaxWatches,
          maxRunAtAheadMs: config.limits.maxRunAtAheadMs,
          artifactDir: deploymentArtifactDir(config.worker.artifactDir, config.redis.prefix),
          submitter: createSubmitter({
            redis: commands,
            queues: queues.byType,
            keys,
            shards,
            queuesOf: queues.of,
            settings: { ...bullJobSettings, limits: config.limits, redis: config.redis },
          }),
          control: createJobControl({
            redis: commands,
            keys,
            jobs,
            queueTransitions,
            bullJob: (job) => bullJobSpec(job, bullJobSettings),
          }),
          lister: createJobLister({ redis: commands, keys, shards: holding }),
          jobs,
          log,
          hub,
          storage: storageHealth,
          shutdownSignal: shutdown.signal,
          logger,
        });
  if (api) shutdown.add("server", () => api.server.close(5000));
  // The first step: shutdown.signal has just ended open watches (UNAVAILABLE).
  shutdown.add("storage health", () => storageHealth.close());

  return {
    config,
    logger,
    keys,
    hub,
    worker: worker?.worker,
    janitor: worker?.janitor,
    reconciler: worker?.reconciler,
    storageHealth,
    async start() {
      await redis.ready();
      await storageHealth.start();
      const metricsUrl = httpUrl(
        await metricsServer.listen(config.telemetry.metricsPort, config.telemetry.metricsHost),
      );
      logger.info({ url: `${metricsUrl}/metrics` }, "metrics and probes listening");
      stopObserving.push(instruments.observeQueueDepth(() => queues.depth()));
      if (hub) stopObserving.push(instruments.observeWatchers(() => hub.listenerCount));
      const listening = await api?.listen();
      await worker?.start();
      return { url: listening?.url, port: listening?.port, metricsUrl };
    },
    close: () => shutdown.close(),
  };
}
