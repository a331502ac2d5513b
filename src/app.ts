/**
 * Wires the parts for a mode and returns them unstarted, with one close()
 * that stops everything in order. Tests build apps with this, exactly as
 * main.ts does.
 */
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { kTenant } from "./api/context-keys.js";
import { withCors } from "./api/cors.js";
import { createHttpRoutes } from "./api/http-routes.js";
import { createReportService } from "./api/report-service.js";
import { createDualServer, type DualServer } from "./api/server.js";
import type { Config } from "./config/config.js";
import type { ReportType } from "./domain/job.js";
import { createEventHub, type EventHub } from "./events/event-hub.js";
import { createEventLog } from "./events/event-log.js";
import { closeRedis, createRedisConnection, waitForReady } from "./queue/connections.js";
import { createJobReader } from "./queue/job-reader.js";
import { createKeys, type Keys, queueName } from "./queue/keys.js";
import { createSubmitter } from "./queue/submitter.js";
import { createLogger } from "./telemetry/logger.js";
import { createArtifactStore } from "./worker/artifact-store.js";
import type { ReportGenerator } from "./worker/generator.js";
import { createCustomReport } from "./worker/generators/custom-report.js";
import { createMonthlyReport } from "./worker/generators/monthly-report.js";
import { createWeeklyReport } from "./worker/generators/weekly-report.js";
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
  /** Connects, checks Redis, listens (api) and starts fetching jobs (worker). Returns the API's URL. */
  start(): Promise<{ url?: string; port?: number }>;
  /** Stops in order: watches, server, workers, Redis. Idempotent; never throws. */
  close(): Promise<void>;
}

/** Builds an app for `config.mode`. */
export function createApp(config: Config, options: AppOptions = {}): App {
  const logger = options.logger ?? createLogger(config.logLevel, { mode: config.mode });
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

  let hub: EventHub | undefined;
  let queue: Queue | undefined;
  let server: DualServer | undefined;
  if (runsApi) {
    hub = createEventHub({ subscriber: connect("subscriber"), keys, logger });
    queue = new Queue(queueName, { connection: commands, prefix: keys.bullPrefix });
    queue.on("error", (err) => logger.warn({ err: err.message }, "queue error"));
    const attempts = Object.fromEntries(
      Object.entries(config.reportTypes).map(([t, s]) => [t, s.attempts]),
    ) as Record<ReportType, number>;
    const submitter = createSubmitter({
      redis: commands,
      queue,
      keys,
      settings: {
        attempts,
        retryBackoffMs: config.retryBackoffMs,
        idempotencyTtlMs: config.idempotencyTtlMs,
        retentionSucceededMs: config.retentionSucceededMs,
        retentionFailedMs: config.retentionFailedMs,
        maxBacklog: config.maxBacklog,
        eventStreamMaxLen: config.eventStreamMaxLen,
      },
    });
    const service = createReportService({
      submitter,
      jobs,
      log,
      hub,
      publicUrl: config.publicUrl,
      keepaliveMs: config.watchKeepaliveMs,
      watchMaxDurationMs: config.watchMaxDurationMs,
      shutdownSignal: shutdown.signal,
      logger,
    });
    const contextValues = () => createContextValues().set(kTenant, "default");
    const fallback = createHttpRoutes({
      service,
      jobs,
      artifactDir: config.artifactDir,
      contextValues,
      ready: async () => {
        await commands.ping();
      },
      shutdownSignal: shutdown.signal,
      logger,
    });
    const handler = connectNodeAdapter({
      routes: (router) => router.service(ReportService, service),
      readMaxBytes: config.readMaxBytes,
      maxTimeoutMs: config.maxTimeoutMs,
      shutdownSignal: shutdown.signal,
      contextValues,
      fallback,
    });
    server = createDualServer(withCors(handler, config.corsOrigins), {
      keepaliveMs: 30_000,
      logger,
    });
  }

  let worker: ReportWorker | undefined;
  if (runsWorker) {
    const simulation = { phaseDelayMs: config.reportPhaseDelayMs, failRate: config.reportFailRate };
    const generators: Record<ReportType, ReportGenerator> = {
      weekly: createWeeklyReport(simulation),
      monthly: createMonthlyReport(simulation),
      custom: createCustomReport(simulation),
      ...options.generators,
    };
    const timeoutMs = Object.fromEntries(
      Object.entries(config.reportTypes).map(([t, s]) => [t, s.timeoutMs]),
    ) as Record<ReportType, number>;
    const processor = createProcessor({
      log,
      jobs,
      generators,
      artifacts: createArtifactStore(config.artifactDir),
      settings: {
        timeoutMs,
        retryBackoffMs: config.retryBackoffMs,
        retentionSucceededMs: config.retentionSucceededMs,
        retentionFailedMs: config.retentionFailedMs,
      },
      logger,
    });
    worker = createReportWorker({
      connection: connect("worker"),
      processor,
      settings: {
        bullPrefix: keys.bullPrefix,
        concurrency: config.workerConcurrency,
        retryBackoffMs: config.retryBackoffMs,
        lockDurationMs: options.lockDurationMs ?? config.lockDurationMs,
        stalledIntervalMs: options.stalledIntervalMs ?? config.stalledIntervalMs,
      },
      logger,
    });
  }

  let closing: Promise<void> | undefined;
  const step = async (name: string, fn: () => Promise<void> | void) => {
    try {
      await fn();
    } catch (err) {
      logger.warn({ err, step: name }, "shutdown step failed");
    }
  };

  return {
    config,
    logger,
    keys,
    hub,
    worker,
    async start() {
      await waitForReady(commands, 5000).catch(() => {
        throw new Error(`cannot reach Redis at ${redactedTarget(config.redisUrl)} (set REDIS_URL)`);
      });
      await checkEvictionPolicy(commands, logger);
      let url: string | undefined;
      let port: number | undefined;
      if (server) {
        const address = await server.listen(config.port, config.host);
        port = address.port;
        const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
        url = `http://${host}:${port}`;
        logger.info(
          { url, mode: config.mode },
          "api listening (gRPC, gRPC-Web and Connect on one port)",
        );
      }
      if (worker) {
        worker.start();
        logger.info({ concurrency: config.workerConcurrency }, "worker started");
      }
      return { url, port };
    },
    close() {
      closing ??= (async () => {
        const deadline = config.shutdownGraceMs + 5000;
        const timer = setTimeout(() => logger.warn("shutdown is taking long"), deadline);
        timer.unref();
        shutdown.abort();
        if (server) await step("server", () => server?.close(Math.min(5000, deadline)));
        if (worker) await step("worker", () => worker?.close(config.shutdownGraceMs));
        if (hub) await step("hub", () => hub?.close());
        if (queue) await step("queue", () => queue?.close());
        await step("redis", async () => {
          await Promise.all(connections.map((c) => closeRedis(c)));
        });
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
