/**
 * Settings and key names of the naive Express + BullMQ baseline, read from
 * the environment the way a small hand-written service would: no schema
 * library, a default for everything, a thrown error for a bad number.
 */

/** What the baseline's API and worker need. */
export interface BaselineConfig {
  redisUrl: string;
  host: string;
  port: number;
  /** Base of the status URLs the API hands out. */
  publicUrl: string;
  /** BullMQ's key prefix; every key of the baseline starts with it. */
  prefix: string;
  /** Jobs one worker process runs at once. */
  concurrency: number;
  /** Simulated work before each of the phases fetch-data, render and completed, in ms. */
  phaseDelayMs: number;
  /** Where the worker writes report files, one folder per job. */
  artifactDir: string;
  /** How long an idempotency record lives, in seconds. */
  idempotencyTtlSeconds: number;
}

/** The one BullMQ queue of the baseline (all report types share it). */
export const baselineQueueName = "reports";

/** The idempotency record of a key: a string, the job id. */
export function idempotencyKey(prefix: string, key: string): string {
  return `${prefix}:idem:${key}`;
}

/** The per-job event stream the worker appends to and watchers read. */
export function eventStreamKey(prefix: string, jobId: string): string {
  return `${prefix}:events:${jobId}`;
}

/** Reads the configuration from `env`; throws on a malformed number. */
export function readBaselineConfig(env: Record<string, string | undefined>): BaselineConfig {
  const int = (name: string, def: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be an integer >= 0`);
    return n;
  };
  const host = env.HOST ?? "127.0.0.1";
  const port = int("PORT", 8090);
  return {
    redisUrl: env.REDIS_URL ?? "redis://127.0.0.1:6379",
    host,
    port,
    publicUrl: env.PUBLIC_URL ?? `http://${host}:${port}`,
    prefix: env.BULL_PREFIX ?? "naive",
    concurrency: Math.max(1, int("WORKER_CONCURRENCY", 10)),
    phaseDelayMs: int("REPORT_PHASE_DELAY_MS", 500),
    artifactDir: env.ARTIFACT_DIR ?? "./.data/naive-artifacts",
    idempotencyTtlSeconds: Math.max(1, int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600)),
  };
}
