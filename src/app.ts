/**
 * Wires the parts for a mode and returns them unstarted, with one close()
 * that stops everything in order. Tests build apps with this, exactly as
 * main.ts does.
 */
import { setMaxListeners } from "node:events";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { file_reports_v1_errors } from "../gen/reports/v1/errors_pb.js";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import {
  authenticateHttp,
  createAuthenticator,
  createAuthInterceptor,
  logAuthMode,
} from "./api/auth.js";
import { kTenant } from "./api/context-keys.js";
import { withCors } from "./api/cors.js";
import { createDownloadSigner } from "./api/download-signer.js";
import { createHealthService } from "./api/health-service.js";
import { withHttpRequestLog } from "./api/http-request-log.js";
import { createHttpRoutes } from "./api/http-routes.js";
import { withParseErrorsAsInvalidArgument } from "./api/parse-errors.js";
import { createReadiness } from "./api/readiness.js";
import { addReflection } from "./api/reflection-service.js";
import { createReportService } from "./api/report-service.js";
import { createRequestLogInterceptor } from "./api/request-log-interceptor.js";
import { createDualServer, type DualServer } from "./api/server.js";
import { createTelemetryInterceptor } from "./api/telemetry-interceptor.js";
import { createWatchLimiter } from "./api/watch-limiter.js";
import type { Config } from "./config/config.js";
import { type ReportType, reportTypes } from "./domain/job.js";
import { createEventHub, type EventHub } from "./events/event-hub.js";
import { createEventLog } from "./events/event-log.js";
import { closeRedis, createRedisConnection, waitForReady } from "./queue/connections.js";
import { createJobControl } from "./queue/job-control.js";
import { createJobLister } from "./queue/job-lister.js";
import { createJobReader } from "./queue/job-reader.js";
import { createKeys, type Keys, queueNameFor } from "./queue/keys.js";
import { createStorageHealth, type StorageHealth } from "./queue/storage-health.js";
import { bullJobSpec, createSubmitter } from "./queue/submitter.js";
import { createLogger } from "./telemetry/logger.js";
import { reportMetrics } from "./telemetry/metrics.js";
import { createMetricsServer } from "./telemetry/metrics-server.js";
import { currentTelemetry } from "./telemetry/telemetry.js";
import { createArtifactStore } from "./worker/artifact-store.js";
import type { ReportGenerator } from "./worker/generator.js";
import { createCustomReport } from "./worker/generators/custom-report.js";
import { createMonthlyReport } from "./worker/generators/monthly-report.js";
import { createWeeklyReport } from "./worker/generators/weekly-report.js";
import { createJanitor, type Janitor } from "./worker/janitor.js";
import { createProcessor } from "./worker/processor.js";
import { createReportWorker, type ReportWorker } from "./worker/report-worker.js";

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
    createLogger(config.logLevel, { mode: config.mode }, { format: config.logFormat });
  const keys = createKeys(config.redisPrefix);
  const runsApi = config.mode !== "worker";
  const runsWorker = config.mode !== "api";
  const connections: Redis[] = [];
  const connect = (purpose: Parameters<typeof createRedisConnection>[1]) => {
    const c = createRedisConnection(config.redisUrl, purpose, logger);
    connections.push(c);
    return c;
  };

  const commands = connect("command");
  const jobs = createJobReader({ redis: commands, keys });
  const log = createEventLog({ redis: commands, keys, maxLen: config.eventStreamMaxLen });
  const shutdown = new AbortController();
  // Short PING deadline: health must turn NOT_SERVING within seconds of Redis hanging.
  const storageHealth = createStorageHealth({
    redis: commands,
    intervalMs: 1000,
    timeoutMs: 1000,
    logger,
  });
  // Every request's context listens to this signal (connect-node links them).
  setMaxListeners(0, shutdown.signal);
  // The API's readiness: /readyz and gRPC health answer it, so the two probes never disagree.
  const readiness = createReadiness({ storage: storageHealth, shutdownSignal: shutdown.signal });

  // One BullMQ queue per report type (own concurrency and rate limits), sharing the command connection.
  const queues = Object.fromEntries(
    reportTypes.map((t) => {
      const q = new Queue(queueNameFor(t), { connection: commands, prefix: keys.bullPrefix });
      q.on("error", (err) => logger.warn({ err: err.message }, "queue error"));
      return [t, q];
    }),
  ) as Record<ReportType, Queue>;
  const queueSettings = {
    retryBackoffMs: config.retryBackoffMs,
    retentionSucceededMs: config.retentionSucceededMs,
    retentionFailedMs: config.retentionFailedMs,
  };

  let hub: EventHub | undefined;
  let server: DualServer | undefined;
  if (runsApi) {
    hub = createEventHub({ subscriber: connect("subscriber"), keys, logger });
    const attempts = Object.fromEntries(
      reportTypes.map((t) => [t, config.reportTypes[t].attempts]),
    ) as Record<ReportType, number>;
    const submitter = createSubmitter({
      redis: commands,
      queues,
      keys,
      settings: {
        ...queueSettings,
        attempts,
        idempotencyTtlMs: config.idempotencyTtlMs,
        maxBacklog: config.maxBacklog,
        backlogRetryAfterMs: config.backlogRetryAfterMs,
        eventStreamMaxLen: config.eventStreamMaxLen,
        tenantSubmitRate: config.tenantSubmitRate,
        tenantSubmitBurst: config.tenantSubmitBurst,
      },
    });
    const auth = createAuthenticator(config.apiKeys);
    logAuthMode(config, logger);
    const downloadSigner = createDownloadSigner({
      secret: config.downloadUrlSecret,
      ttlMs: config.downloadUrlTtlMs,
    });
    const control = createJobControl({
      redis: commands,
      queues,
      keys,
      jobs,
      log,
      bullJob: (job) => bullJobSpec(job, queueSettings),
      settings: { retentionFailedMs: config.retentionFailedMs },
    });
    const service = createReportService({
      submitter,
      jobs,
      control,
      lister: createJobLister({ redis: commands, keys }),
      log,
      hub,
      publicUrl: config.publicUrl,
      keepaliveMs: config.watchKeepaliveMs,
      watchMaxDurationMs: config.watchMaxDurationMs,
      downloadSigner,
      watchLimiter: createWatchLimiter(config.tenantMaxWatches),
      shutdownSignal: shutdown.signal,
      logger,
    });
    // RPCs start in the open tenant; the auth interceptor sets the caller's.
    const contextValues = () => createContextValues().set(kTenant, "default");
    const fallback = createHttpRoutes({
      service,
      jobs,
      artifactDir: config.artifactDir,
      contextValues: (req) => authenticateHttp(auth, req),
      signer: downloadSigner,
      readiness,
      shutdownSignal: shutdown.signal,
      logger,
    });
    const handler = connectNodeAdapter({
      routes: withParseErrorsAsInvalidArgument((router) => {
        router.service(ReportService, service);
        router.service(
          Health,
          createHealthService({ readiness, services: [ReportService.typeName] }),
        );
        // Last: reflection lists everything registered before it.
        addReflection(router, [file_reports_v1_errors]);
      }),
      // Tracing first, so its span covers every other interceptor (and the request
      // log line); authentication last, so a refused call is still traced and logged.
      interceptors: [
        createTelemetryInterceptor(),
        createRequestLogInterceptor(logger),
        createAuthInterceptor(auth, config.authExemptServices, logger),
      ],
      readMaxBytes: config.readMaxBytes,
      maxTimeoutMs: config.maxTimeoutMs,
      shutdownSignal: shutdown.signal,
      contextValues,
      fallback: withHttpRequestLog(fallback, { logger, contextValues }),
    });
    server = createDualServer(withCors(handler, config.corsOrigins), {
      keepaliveMs: 30_000,
      logger,
    });
  }

  let worker: ReportWorker | undefined;
  let janitor: Janitor | undefined;
  if (runsWorker) {
    const simulation = { phaseDelayMs: config.reportPhaseDelayMs, failRate: config.reportFailRate };
    const generators: Record<ReportType, ReportGenerator> = {
      weekly: createWeeklyReport(simulation),
      monthly: createMonthlyReport(simulation),
      custom: createCustomReport(simulation),
      ...options.generators,
    };
    const timeoutMs = Object.fromEntries(
      reportTypes.map((t) => [t, config.reportTypes[t].timeoutMs]),
    ) as Record<ReportType, number>;
    const artifacts = createArtifactStore(config.artifactDir);
    const processor = createProcessor({
      log,
      jobs,
      generators,
      artifacts,
      settings: { ...queueSettings, timeoutMs },
      logger,
    });
    worker = createReportWorker({
      connection: connect("worker"),
      subscriber: connect("subscriber"),
      commands,
      keys,
      processor,
      settings: {
        bullPrefix: keys.bullPrefix,
        types: config.reportTypes,
        retryBackoffMs: config.retryBackoffMs,
        lockDurationMs: options.lockDurationMs ?? config.lockDurationMs,
        stalledIntervalMs: options.stalledIntervalMs ?? config.stalledIntervalMs,
        cancelPollMs: config.cancelPollMs,
      },
      logger,
    });
    janitor = createJanitor({
      redis: commands,
      keys,
      queues,
      artifacts,
      artifactDir: config.artifactDir,
      settings: {
        ...queueSettings,
        intervalMs: config.retentionSweepMs,
        retentionSucceededCount: config.retentionSucceededCount,
        retentionFailedCount: config.retentionFailedCount,
      },
      logger,
    });
  }

  // The metrics and probe port (every mode): /metrics, /healthz, /readyz.
  const instruments = reportMetrics();
  const stopObserving: Array<() => void> = [];
  const metricsServer = createMetricsServer({
    prometheus: currentTelemetry()?.prometheus,
    // The API's readiness, and a worker's BullMQ workers running.
    readiness: createReadiness({
      storage: storageHealth,
      shutdownSignal: shutdown.signal,
      workersRunning: () =>
        worker === undefined || reportTypes.every((t) => worker?.workers[t].isRunning()),
    }),
    logger,
  });

  let closing: Promise<void> | undefined;
  // Every shutdown step has a deadline: a stuck step (Redis gone, say) is
  // logged and skipped so the process still exits.
  const step = async (name: string, fn: () => Promise<void> | void, timeoutMs = 5000) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        fn(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      logger.warn(
        { err: err instanceof Error ? err.message : String(err), step: name },
        "shutdown step failed",
      );
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    config,
    logger,
    keys,
    hub,
    worker,
    janitor,
    storageHealth,
    async start() {
      await waitForReady(commands, 5000).catch(() => {
        throw new Error(`cannot reach Redis at ${redactedTarget(config.redisUrl)} (set REDIS_URL)`);
      });
      await checkEvictionPolicy(commands, logger);
      await storageHealth.start();
      const metricsAddress = await metricsServer.listen(config.metricsPort, config.metricsHost);
      const metricsUrl = `http://${metricsAddress.family === "IPv6" ? `[${metricsAddress.address}]` : metricsAddress.address}:${metricsAddress.port}`;
      logger.info({ url: `${metricsUrl}/metrics` }, "metrics and probes listening");
      stopObserving.push(
        instruments.observeQueueDepth(() => queueDepth(queues)),
        ...(hub ? [instruments.observeWatchers(() => hub?.listenerCount ?? 0)] : []),
      );
      let url: string | undefined;
      let port: number | undefined;
      if (server) {
        const address = await server.listen(config.port, config.host);
        port = address.port;
        const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
        url = `http://${host}:${port}`;
        logger.info({ url }, "api listening (gRPC, gRPC-Web and Connect on one port)");
      }
      if (worker) {
        await worker.start();
        janitor?.start();
        logger.info({ concurrency: config.workerConcurrency }, "worker started");
      }
      return { url, port, metricsUrl };
    },
    close() {
      closing ??= (async () => {
        const deadline = config.shutdownGraceMs + 5000;
        const timer = setTimeout(() => logger.warn("shutdown is taking long"), deadline);
        timer.unref();
        shutdown.abort();
        storageHealth.close();
        if (server) await step("server", () => server?.close(Math.min(5000, deadline)));
        if (worker) {
          await step(
            "worker",
            () => worker?.close(config.shutdownGraceMs),
            config.shutdownGraceMs + 5000,
          );
        }
        if (janitor) await step("janitor", () => janitor?.close());
        if (hub) await step("hub", () => hub?.close());
        await step("queues", async () => {
          await Promise.all(Object.values(queues).map((q) => q.close()));
        });
        for (const stop of stopObserving.splice(0)) stop();
        await step("redis", async () => {
          await Promise.all(connections.map((c) => closeRedis(c)));
        });
        // Last: probes and scrapes answer (not ready) while the rest drains.
        await step("metrics server", () => metricsServer.close());
        clearTimeout(timer);
      })();
      return closing;
    },
  };
}

/** host:port of a Redis URL, without credentials. */
function redactedTarget(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 6379}`;
  } catch {
    return "(invalid REDIS_URL)";
  }
}

/** BullMQ loses jobs if Redis evicts keys; say so loudly at start. */
async function checkEvictionPolicy(redis: Redis, logger: Logger): Promise<void> {
  try {
    const reply = (await redis.config("GET", "maxmemory-policy")) as string[];
    const policy = reply[1];
    if (policy !== undefined && policy !== "noeviction") {
      logger.error(
        { policy },
        `Redis maxmemory-policy is ${policy}; set it to noeviction or jobs can be lost (CONFIG SET maxmemory-policy noeviction)`,
      );
    }
  } catch {
    logger.warn(
      "could not read Redis maxmemory-policy (CONFIG is disabled); make sure it is noeviction",
    );
  }
}

/** Jobs per report type and BullMQ state, for the reports.queue.depth gauge. */
async function queueDepth(
  queues: Record<ReportType, Queue>,
): Promise<Array<{ type: ReportType; state: string; count: number }>> {
  const states = ["waiting", "prioritized", "delayed", "active", "paused", "failed"] as const;
  const counts = await Promise.all(reportTypes.map((t) => queues[t].getJobCounts(...states)));
  return reportTypes.flatMap((type, i) =>
    states.map((state) => ({ type, state, count: counts[i]?.[state] ?? 0 })),
  );
}
