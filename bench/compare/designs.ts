/**
 * The two designs bench:compare runs side by side: this service ("ours") and
 * the naive Express + BullMQ baseline (bench/baselines/express-bullmq). Each
 * says how to start its API and worker, how its callers talk to it, where its
 * weekly jobs queue (to pause, resume and fill it), and how to tell from Redis
 * that a job has finished and when.
 */
import type { Redis } from "ioredis";
import { decodeEvent } from "../../src/events/event-codec.js";
import { createKeys, queueNameFor } from "../../src/queue/keys.js";
import { baselineQueueName, eventStreamKey } from "../baselines/express-bullmq/config.js";
import { benchFilters, type StatusProtocol, type WatchProtocol } from "../load.js";
import type { ServiceSpec } from "./service-process.js";

/** Which design. */
export type DesignId = "ours" | "baseline";

/** What an API process is started with. */
export interface ApiSettings {
  redisUrl: string;
  port: number;
  artifactDir: string;
  /** Telemetry as shipped (true) or OTEL_SDK_DISABLED=true; the baseline has none. */
  telemetry: boolean;
  /** Watches the run opens at most (ours caps them per tenant). */
  maxWatchers: number;
}

/** What a worker process is started with. */
export interface WorkerSettings {
  redisUrl: string;
  artifactDir: string;
  concurrency: number;
  phaseDelayMs: number;
  /** Telemetry as shipped (true) or OTEL_SDK_DISABLED=true; the baseline has none. */
  telemetry: boolean;
}

/** One design under test. */
export interface Design {
  id: DesignId;
  label: string;
  api(name: string, s: ApiSettings): ServiceSpec;
  worker(name: string, s: WorkerSettings): ServiceSpec;
  /** How callers submit over JSON (HTTP/1.1), read a job, and watch. */
  submitProtocol: "connect-json" | "baseline-json";
  statusProtocol: StatusProtocol;
  watchProtocol: WatchProtocol;
  /** True when each watch holds a blocking Redis connection (XREAD BLOCK). */
  watchBlocksRedis: boolean;
  /** The BullMQ queue weekly reports go to. */
  queue: { name: string; prefix: string };
  /** A job as it sits in the queue, for filling a backlog with queue.addBulk. */
  backlogJob(i: number): { name: string; data: Record<string, unknown> };
  /** Jobs that have finished successfully, and unsuccessfully, so far. */
  finishedCounts(redis: Redis): Promise<{ succeeded: number; failed: number }>;
  /** For each job id: the time (ms since the epoch) its terminal event was written, if it has been. */
  finishedAt(redis: Redis, jobIds: readonly string[]): Promise<(number | undefined)[]>;
}

/** The ms part of a stream entry id. */
function streamIdMs(id: string): number {
  return Number(id.slice(0, id.indexOf("-")));
}

/** Reads the last entry of each stream; answers its id when `isTerminal` says so. */
async function lastTerminalEntry(
  redis: Redis,
  streams: readonly string[],
  isTerminal: (id: string, fields: string[]) => boolean,
): Promise<(number | undefined)[]> {
  const out: (number | undefined)[] = [];
  for (let i = 0; i < streams.length; i += 1000) {
    const pipe = redis.pipeline();
    for (const s of streams.slice(i, i + 1000)) pipe.xrevrange(s, "+", "-", "COUNT", 1);
    for (const [err, reply] of (await pipe.exec()) ?? []) {
      const entry = err ? undefined : (reply as [string, string[]][])[0];
      out.push(
        entry !== undefined && isTerminal(entry[0], entry[1]) ? streamIdMs(entry[0]) : undefined,
      );
    }
  }
  return out;
}

const oursPrefix = "bench";
const oursKeys = createKeys(oursPrefix);

/** This service, started as `npm start` ships it (telemetry preload, LOG_LEVEL info). */
export const ours: Design = {
  id: "ours",
  label: "ours",
  api: (name, s) => ({
    name,
    entry: "src/main.ts",
    args: ["api"],
    preloads: ["./src/telemetry/preload.ts"],
    env: {
      REDIS_URL: s.redisUrl,
      REDIS_PREFIX: oursPrefix,
      HOST: "127.0.0.1",
      PORT: String(s.port),
      // A free port: a service running on this host keeps 9464.
      METRICS_PORT: "0",
      ARTIFACT_DIR: s.artifactDir,
      // The accept measurements leave every job queued: the bound must not answer RESOURCE_EXHAUSTED.
      MAX_BACKLOG: "100000000",
      ...(s.maxWatchers > 10_000 ? { TENANT_MAX_WATCHES: String(s.maxWatchers) } : {}),
      ...(s.telemetry ? {} : { OTEL_SDK_DISABLED: "true" }),
    },
  }),
  worker: (name, s) => ({
    name,
    entry: "src/main.ts",
    args: ["worker"],
    preloads: ["./src/telemetry/preload.ts"],
    env: {
      REDIS_URL: s.redisUrl,
      REDIS_PREFIX: oursPrefix,
      METRICS_PORT: "0",
      ARTIFACT_DIR: s.artifactDir,
      MAX_BACKLOG: "100000000",
      WORKER_CONCURRENCY: String(s.concurrency),
      REPORT_PHASE_DELAY_MS: String(s.phaseDelayMs),
      ...(s.telemetry ? {} : { OTEL_SDK_DISABLED: "true" }),
    },
  }),
  submitProtocol: "connect-json",
  statusProtocol: "connect-get",
  watchProtocol: "grpc-watch",
  watchBlocksRedis: false,
  queue: { name: queueNameFor("weekly"), prefix: oursKeys.bullPrefix },
  backlogJob: (i) => ({
    name: "weekly",
    data: { tenant: "default", userId: `filler-${i}`, reportType: "weekly", filters: benchFilters },
  }),
  async finishedCounts(redis) {
    const [succeeded, failed] = await Promise.all([
      redis.zcard(oursKeys.finished("succeeded")),
      redis.zcard(oursKeys.finished("failed")),
    ]);
    return { succeeded, failed };
  },
  finishedAt: (redis, ids) =>
    lastTerminalEntry(
      redis,
      ids.map((id) => oursKeys.events(id)),
      (id, fields) => decodeEvent(id, fields).type === "succeeded",
    ),
};

const baselinePrefix = "naive";

/** The naive Express + BullMQ design (bench/baselines/express-bullmq). */
export const baseline: Design = {
  id: "baseline",
  label: "baseline",
  api: (name, s) => ({
    name,
    entry: "bench/baselines/express-bullmq/main.ts",
    args: ["api"],
    preloads: [],
    env: {
      REDIS_URL: s.redisUrl,
      BULL_PREFIX: baselinePrefix,
      HOST: "127.0.0.1",
      PORT: String(s.port),
      ARTIFACT_DIR: s.artifactDir,
    },
  }),
  worker: (name, s) => ({
    name,
    entry: "bench/baselines/express-bullmq/main.ts",
    args: ["worker"],
    preloads: [],
    env: {
      REDIS_URL: s.redisUrl,
      BULL_PREFIX: baselinePrefix,
      ARTIFACT_DIR: s.artifactDir,
      WORKER_CONCURRENCY: String(s.concurrency),
      REPORT_PHASE_DELAY_MS: String(s.phaseDelayMs),
    },
  }),
  submitProtocol: "baseline-json",
  statusProtocol: "baseline-get",
  watchProtocol: "baseline-sse",
  watchBlocksRedis: true,
  queue: { name: baselineQueueName, prefix: baselinePrefix },
  backlogJob: (i) => ({
    name: "weekly",
    data: { userId: `filler-${i}`, reportType: "weekly", filters: benchFilters },
  }),
  async finishedCounts(redis) {
    const base = `${baselinePrefix}:${baselineQueueName}`;
    const [succeeded, failed] = await Promise.all([
      redis.zcard(`${base}:completed`),
      redis.zcard(`${base}:failed`),
    ]);
    return { succeeded, failed };
  },
  finishedAt: (redis, ids) =>
    lastTerminalEntry(
      redis,
      ids.map((id) => eventStreamKey(baselinePrefix, id)),
      (_id, fields) => fields[fields.indexOf("type") + 1] === "completed",
    ),
};

/** Both designs, by id. */
export const designs: Record<DesignId, Design> = { ours, baseline };
