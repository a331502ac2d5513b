/**
 * The only reader of process.env. One schema, every problem reported at once,
 * each on its own line, before anything connects. Secrets are never echoed.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { type ReportType, reportTypes } from "../domain/job.js";
import { type ApiKeyEntry, isLoopbackHost, parseApiKeys, parseApiKeysFile } from "./api-keys.js";

/** Which parts a process runs. */
export type Mode = "api" | "worker" | "all";

/** Per-report-type worker settings. */
export interface ReportTypeSettings {
  attempts: number;
  /** A generator running longer than this is aborted and the attempt fails. */
  timeoutMs: number;
  /** Jobs of this type running at once in one worker process. */
  concurrency: number;
  /** At most `max` jobs of this type start per `durationMs`, across all workers. */
  rateLimit?: { max: number; durationMs: number };
}

/** Where Redis is and which keys are ours. */
export interface RedisConfig {
  /** REDIS_URL (may carry a password: never logged). */
  url: string;
  /** True when REDIS_URL was not given (main may then start a private redis-server). */
  urlDefaulted: boolean;
  /** Prefix of every Redis key this service writes (BullMQ's included). */
  prefix: string;
  /** REQUIRE_AOF: refuse to start unless Redis is known to have appendonly on. */
  requireAof: boolean;
  /**
   * SUBMIT_WAITAOF: 0 (off) or 1, WAITAOF's numlocal. With 1, a submit is
   * acknowledged only once Redis has fsynced it to its AOF (Redis 7.2+).
   */
  submitWaitAof: 0 | 1;
  /**
   * REDIS_CLUSTER_NODES: `host:port` seeds of a Redis Cluster (comma-separated);
   * when set, every connection is an ioredis Cluster and REDIS_URL only lends
   * its credentials and TLS. Empty: one Redis at REDIS_URL.
   */
  clusterNodes: Array<{ host: string; port: number }>;
  /**
   * QUEUE_SHARDS: how many shards each report type's queue (and every key of
   * a job) is split into, 1-1024. 1 on a single Redis is the unsharded
   * layout (no hash tags); on a cluster every shard carries a hash tag.
   */
  queueShards: number;
  /**
   * SUBMIT_WAIT_REPLICAS: 0 (off) or n, WAIT's numreplicas. With n, a submit
   * is acknowledged only once n replicas of its master have the job.
   */
  submitWaitReplicas: number;
  /** SUBMIT_WAIT_REPLICAS_TIMEOUT_MS: how long such a submit waits for its replicas. */
  submitWaitReplicasTimeoutMs: number;
}

/** The API port: where it listens, what it accepts, how watches and downloads behave. */
export interface ApiConfig {
  host: string;
  port: number;
  /**
   * API_PROCESSES: API processes serving the port (node:cluster), so the API
   * uses more than one core in one container; 1 runs none besides this one.
   * Mode `api` only.
   */
  processes: number;
  /**
   * Which of them this process is (0-based), set by the primary in the
   * processes it starts (API_PROCESS_INDEX); undefined in a lone process.
   */
  processIndex: number | undefined;
  /** Base of the absolute URLs the API hands out (status and download URLs). */
  publicUrl: string;
  /** Browser origins allowed by CORS ("*": any). */
  corsOrigins: string[];
  /** Largest request message, in bytes. */
  readMaxBytes: number;
  /** Longest deadline a caller may ask for, in ms. */
  maxTimeoutMs: number;
  /** How often an idle WatchJob stream gets a keepalive, in ms. */
  watchKeepaliveMs: number;
  /** Longest a WatchJob stream stays open, in ms. */
  watchMaxDurationMs: number;
  /** How long a signed download URL stays valid, in ms. */
  downloadUrlTtlMs: number;
  /** A new connection must send the HTTP/2 preface (with SETTINGS) or its first HTTP/1.1 byte within this, in ms. */
  handshakeTimeoutMs: number;
  /** HTTP/1.1: a request's headers must arrive within this, in ms (at most requestTimeoutMs). */
  headersTimeoutMs: number;
  /** A whole request (headers and body; HTTP/1.1 and HTTP/2) must arrive within this, in ms. */
  requestTimeoutMs: number;
  /** HTTP/1.1: an idle keep-alive connection is closed after this long, in ms. */
  http1KeepAliveTimeoutMs: number;
  /** HTTP/2: a session without open streams is closed (GOAWAY) after this long, in ms. */
  http2IdleTimeoutMs: number;
  /** HTTP/2: concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  http2MaxConcurrentStreams: number;
  /** HTTP/2: nghttp2 memory per connection, in MB; beyond it new streams are refused. */
  http2MaxSessionMemoryMb: number;
  /** Open connections on the API port. */
  maxConnections: number;
  /** Open connections per remote address (IPv6: per /64); 0: no cap. */
  maxConnectionsPerAddress: number;
  /** Open streams (HTTP/2 streams and HTTP/1.1 requests in progress) on the API port. */
  maxStreams: number;
  /** Open streams per remote address (IPv6: per /64); 0: no cap. */
  maxStreamsPerAddress: number;
  /** Longest a gRPC Health/Watch or reflection stream stays open, in ms. */
  streamMaxDurationMs: number;
  /** Open Health/Watch streams in this process; 0: no cap. */
  healthMaxWatches: number;
  /** Open reflection streams in this process; 0: no cap. */
  reflectionMaxStreams: number;
}

/** The worker part: how many jobs, how long, how often, and where the reports go. */
export interface WorkerConfig {
  /** WORKER_CONCURRENCY: the default of each report type's concurrency. */
  concurrency: number;
  /**
   * WORKER_SHARDS: the queue shards this process consumes (indexes into
   * QUEUE_SHARDS, e.g. `0-7` or `0,2,4-5`), sorted; every shard when unset.
   */
  shards?: number[];
  /**
   * BullMQ lock duration, in ms: a dead worker's jobs are taken over after
   * this long (plus up to one stalled interval). README "Crash recovery and
   * fenced attempts" weighs it.
   */
  lockDurationMs: number;
  /**
   * How often a running job's lock is renewed, in ms (below lockDurationMs).
   * Undefined: an eighth of lockDurationMs (report-worker.ts renewInterval).
   * A worker frozen longer than lockDurationMs - lockRenewMs loses its jobs.
   */
  lockRenewMs?: number;
  /** How often workers look for stalled jobs (of dead workers), in ms. */
  stalledIntervalMs: number;
  /** How often workers check running jobs for a cancel request they may have missed. */
  cancelPollMs: number;
  /**
   * How often the reconciler looks for live jobs whose BullMQ job is missing
   * or finished, in ms; it looks at jobs unchanged for at least this long.
   */
  reconcileIntervalMs: number;
  /** On stop, how long running jobs may finish before they go back to the queue, in ms. */
  shutdownGraceMs: number;
  /** Where reports are written (and served from by the API's download URLs). */
  artifactDir: string;
  /**
   * Whether small reports are appended to segment files (worker/report-segments.ts)
   * rather than each written to a file of its own (REPORT_SEGMENTS, default true).
   */
  reportSegments: boolean;
  /**
   * Attempts, timeout, concurrency and rate of each report type. The API
   * stamps `attempts` on each job it accepts; the worker enforces the rest.
   */
  reportTypes: Record<ReportType, ReportTypeSettings>;
  /** Base delay of the exponential retry backoff, in ms. */
  retryBackoffMs: number;
  /**
   * PROGRESS_LINGER_MS: a progress report that comes within this many ms of
   * its attempt's previous write is held up to this long, joined by the
   * reports that follow meanwhile, and sent with them in one write (or with
   * the attempt's SUCCEEDED write, when the generator returns first); a
   * report after a quieter gap is sent at once. The attempt's STARTED is
   * held as long from its start, the same way. 0: STARTED is written before
   * the generator starts, every report at once (worker/processor.ts).
   */
  progressLingerMs: number;
  /** The built-in generators' simulated work. */
  simulation: {
    /** Time each report phase takes, in ms. */
    phaseDelayMs: number;
    /** Chance (0 to 1) that a phase fails. */
    failRate: number;
  };
}

/** How long what is finished stays, and how it is swept. */
export interface RetentionConfig {
  /** Age at which a SUCCEEDED job (record, events, artifacts) expires, in ms. */
  succeededMs: number;
  /** Age at which a FAILED or CANCELLED job expires, in ms. */
  failedMs: number;
  /** Keep at most this many SUCCEEDED jobs (0: no limit; the age still applies). */
  succeededCount: number;
  /** Keep at most this many FAILED and CANCELLED jobs (0: no limit). */
  failedCount: number;
  /** How often the janitor removes what expired (index entries, artifacts, BullMQ jobs), in ms. */
  sweepMs: number;
  /** Events kept per job stream. */
  eventStreamMaxLen: number;
  /** How long an idempotency key maps to its job, in ms. */
  idempotencyTtlMs: number;
}

/** Admission limits: what a caller or tenant may ask of the service at once. */
export interface LimitsConfig {
  /** Jobs waiting across all types before submits get RESOURCE_EXHAUSTED. */
  maxBacklog: number;
  /**
   * Jobs of one tenant waiting (queued or retrying, run_at jobs included)
   * before that tenant's submits get RESOURCE_EXHAUSTED.
   */
  tenantMaxBacklog: number;
  /** How far ahead of now a submit's run_at may be, in ms. */
  maxRunAtAheadMs: number;
  /** The retry delay a RESOURCE_EXHAUSTED answer suggests, in ms. */
  backlogRetryAfterMs: number;
  /** Submits per second per tenant (token bucket refill); 0 turns the limit off. */
  tenantSubmitRate: number;
  /** Token bucket size: submits a tenant may make at once. */
  tenantSubmitBurst: number;
  /** Concurrent WatchJob streams per tenant in one API process; 0 turns the cap off. */
  tenantMaxWatches: number;
}

/** Who may call, and the secret of download links. Never logged. */
export interface AuthConfig {
  /** Accepted API keys (digests only), from API_KEYS and API_KEYS_FILE. Empty: open mode. */
  apiKeys: ApiKeyEntry[];
  /** ALLOW_UNAUTHENTICATED: run open (no keys) on a non-loopback HOST. */
  allowUnauthenticated: boolean;
  /** Fully-qualified service names callable without a key (health, reflection). */
  exemptServices: string[];
  /** HMAC key of signed download URLs; undefined: a random one per process. */
  downloadUrlSecret?: string;
}

/** Logs and the metrics and probe port (the OTEL_* decisions are TelemetrySettings). */
export interface TelemetryConfig {
  logLevel: string;
  /** "json" (default) or "pretty" (human-readable, for a terminal). */
  logFormat: "json" | "pretty";
  /** Port of the metrics and probe server (/metrics, /healthz, /readyz); 0 picks a free one. */
  metricsPort: number;
  /** Interface the metrics server listens on (METRICS_HOST, default HOST). */
  metricsHost: string;
}

/**
 * The validated configuration of one process, one slice per part: each
 * builder is handed the slice (or two) it needs, never the whole of it.
 */
export interface Config {
  mode: Mode;
  redis: RedisConfig;
  api: ApiConfig;
  worker: WorkerConfig;
  retention: RetentionConfig;
  limits: LimitsConfig;
  auth: AuthConfig;
  telemetry: TelemetryConfig;
}

/** Raised by loadConfig with one line per problem. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join("\n")}`);
  }
}

type Env = Record<string, string | undefined>;

const modes: readonly Mode[] = ["api", "worker", "all"];
const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/**
 * Reads and validates the configuration from `env`.
 * @param mode - The mode from the command line, if any (wins over MODE).
 * @throws ConfigError listing every problem found.
 */
export function loadConfig(env: Env, mode?: string): Config {
  const problems: string[] = [];
  const read = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };
  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = read(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(
        `${name}: must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`,
      );
      return def;
    }
    return n;
  };
  const float = (name: string, def: number, min: number, max: number): number => {
    const raw = read(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) {
      problems.push(`${name}: must be a number from ${min} to ${max} (got ${JSON.stringify(raw)})`);
      return def;
    }
    return n;
  };
  const oneOf = <T extends string>(
    name: string,
    def: T,
    allowed: readonly T[],
    raw?: string,
  ): T => {
    const v = raw ?? read(name);
    if (v === undefined) return def;
    if (!(allowed as readonly string[]).includes(v)) {
      problems.push(`${name}: must be one of ${allowed.join(", ")} (got ${JSON.stringify(v)})`);
      return def;
    }
    return v as T;
  };

  const resolvedMode = oneOf("MODE", "all", modes, mode);
  const rawRedisUrl = read("REDIS_URL");
  const redisUrl = rawRedisUrl ?? "redis://127.0.0.1:6379";
  try {
    const u = new URL(redisUrl);
    if (u.protocol !== "redis:" && u.protocol !== "rediss:") throw new Error("scheme");
  } catch {
    // Never echo the URL: it may carry a password.
    problems.push("REDIS_URL: must be a redis:// or rediss:// URL");
  }
  const redisPrefix = read("REDIS_PREFIX") ?? "rpt";
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(redisPrefix)) {
    problems.push(
      `REDIS_PREFIX: 1-64 characters of A-Z a-z 0-9 _ . - (got ${JSON.stringify(redisPrefix)})`,
    );
  }
  const clusterNodes: Array<{ host: string; port: number }> = [];
  const rawClusterNodes = read("REDIS_CLUSTER_NODES")?.trim() ?? "";
  for (const seed of rawClusterNodes === "" ? [] : rawClusterNodes.split(",")) {
    const m = /^\s*(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})\s*$/.exec(seed);
    const seedPort = m ? Number(m[2]) : 0;
    if (m === null || seedPort < 1 || seedPort > 65535) {
      problems.push(
        `REDIS_CLUSTER_NODES: each seed must be host:port, comma-separated (got ${JSON.stringify(seed.trim())})`,
      );
      continue;
    }
    clusterNodes.push({ host: (m[1] as string).replace(/^\[|\]$/g, ""), port: seedPort });
  }
  const queueShards = int("QUEUE_SHARDS", 1, 1, 1024);
  const workerShardsRaw = read("WORKER_SHARDS")?.trim() ?? "";
  let workerShards: number[] | undefined;
  if (workerShardsRaw !== "") {
    const picked = new Set<number>();
    for (const part of workerShardsRaw.split(",")) {
      const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
      const from = m ? Number(m[1]) : Number.NaN;
      const to = m?.[2] !== undefined ? Number(m[2]) : from;
      if (!(from <= to && to < queueShards)) {
        problems.push(
          `WORKER_SHARDS: a comma-separated list of shard indexes or ranges (a-b) from 0 to QUEUE_SHARDS-1 = ${queueShards - 1} (got ${JSON.stringify(part.trim())})`,
        );
        continue;
      }
      for (let i = from; i <= to; i++) picked.add(i);
    }
    workerShards = [...picked].sort((a, b) => a - b);
  }
  const submitWaitReplicas = int("SUBMIT_WAIT_REPLICAS", 0, 0, 16);
  const submitWaitReplicasTimeoutMs = int("SUBMIT_WAIT_REPLICAS_TIMEOUT_MS", 1000, 1, 60_000);
  const host = read("HOST") ?? "127.0.0.1";
  const port = int("PORT", 8080, 0, 65535);
  const publicUrlRaw = read("PUBLIC_URL");
  let publicUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (publicUrlRaw !== undefined) {
    try {
      const u = new URL(publicUrlRaw);
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
      publicUrl = publicUrlRaw.replace(/\/+$/, "");
    } catch {
      problems.push(
        `PUBLIC_URL: must be an http:// or https:// URL (got ${JSON.stringify(publicUrlRaw)})`,
      );
    }
  }
  const attempts = int("JOB_ATTEMPTS", 5, 1, 100);
  const defaultTimeout = int("REPORT_TIMEOUT_MS", 5 * 60_000, 100, 24 * 3600_000);
  const workerConcurrency = int("WORKER_CONCURRENCY", 10, 1, 1000);
  const perType = {} as Record<ReportType, ReportTypeSettings>;
  for (const t of reportTypes) {
    const upper = t.toUpperCase();
    const rateMax = int(`${upper}_RATE_MAX`, 0, 0, 1_000_000);
    const rateDuration = int(`${upper}_RATE_DURATION_MS`, 1000, 1, 24 * 3600_000);
    perType[t] = {
      attempts: int(`${upper}_ATTEMPTS`, attempts, 1, 100),
      timeoutMs: int(`${upper}_TIMEOUT_MS`, defaultTimeout, 100, 24 * 3600_000),
      concurrency: int(`${upper}_CONCURRENCY`, workerConcurrency, 1, 1000),
      rateLimit: rateMax > 0 ? { max: rateMax, durationMs: rateDuration } : undefined,
    };
  }
  const corsOrigins = (read("CORS_ORIGINS") ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const o of corsOrigins) {
    if (o !== "*" && !/^https?:\/\/[^/]+$/.test(o)) {
      problems.push(
        `CORS_ORIGINS: ${JSON.stringify(o)} is not an origin like https://app.example.com or *`,
      );
    }
  }

  const bool = (name: string, def: boolean): boolean => {
    const raw = read(name);
    if (raw === undefined) return def;
    if (/^(true|1|yes)$/i.test(raw)) return true;
    if (/^(false|0|no)$/i.test(raw)) return false;
    problems.push(`${name}: must be true or false (got ${JSON.stringify(raw)})`);
    return def;
  };
  // API keys: never echoed, not even in a problem line (api-keys.ts names entries by position).
  const apiKeys = parseApiKeys(env.API_KEYS ?? "", problems);
  const apiKeysFile = read("API_KEYS_FILE");
  if (apiKeysFile !== undefined) {
    let text: string | undefined;
    try {
      text = readFileSync(apiKeysFile, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
      problems.push(`API_KEYS_FILE: cannot read ${apiKeysFile} (${code})`);
    }
    if (text !== undefined) {
      const fromFile = parseApiKeysFile(text, apiKeysFile, problems);
      // An empty file would lock every caller out (or, worse, read as "no keys": open).
      if (fromFile.length === 0 && !problems.some((p) => p.startsWith("API_KEYS_FILE:")))
        problems.push(`API_KEYS_FILE: ${apiKeysFile} lists no keys`);
      apiKeys.push(...fromFile);
    }
  }
  const allowUnauthenticated = bool("ALLOW_UNAUTHENTICATED", false);
  if (
    apiKeys.length === 0 &&
    apiKeysFile === undefined &&
    !problems.some((p) => p.startsWith("API_KEYS")) &&
    resolvedMode !== "worker" &&
    !isLoopbackHost(host) &&
    !allowUnauthenticated
  ) {
    problems.push(
      `API_KEYS: no API keys configured and HOST=${host} is not a loopback address; set API_KEYS or API_KEYS_FILE (or ALLOW_UNAUTHENTICATED=true to serve without authentication)`,
    );
  }
  const authExemptServices = (
    env.AUTH_EXEMPT_SERVICES ??
    "grpc.health.v1.Health,grpc.reflection.v1.ServerReflection,grpc.reflection.v1alpha.ServerReflection"
  )
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const s of authExemptServices) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(s)) {
      problems.push(
        `AUTH_EXEMPT_SERVICES: ${JSON.stringify(s)} is not a fully-qualified service name like grpc.health.v1.Health`,
      );
    }
  }
  const downloadUrlSecret = read("DOWNLOAD_URL_SECRET");
  if (downloadUrlSecret !== undefined && downloadUrlSecret.length < 32) {
    // Never echo the secret.
    problems.push("DOWNLOAD_URL_SECRET: must be at least 32 characters");
  }
  const tenantSubmitRate = float("TENANT_SUBMIT_RATE", 0, 0, 1_000_000);

  // Read in this order so the problem lines keep their order.
  // 8 s lock renewed every second, stalled check every second: a killed
  // worker's jobs run again within 9 s; a freeze under 7 s loses nothing.
  const lockDurationMs = int("WORKER_LOCK_DURATION_MS", 8000, 1000, 3600_000);
  const lockRenewMs =
    read("WORKER_LOCK_RENEW_MS") === undefined
      ? undefined
      : int("WORKER_LOCK_RENEW_MS", 1000, 50, 3600_000);
  if (lockRenewMs !== undefined && lockRenewMs >= lockDurationMs) {
    problems.push(
      `WORKER_LOCK_RENEW_MS: must be below WORKER_LOCK_DURATION_MS (${lockDurationMs}), or a live worker loses its jobs (got ${lockRenewMs})`,
    );
  }
  const stalledIntervalMs = int("WORKER_STALLED_INTERVAL_MS", 1000, 500, 3600_000);
  const artifactDir = path.resolve(read("ARTIFACT_DIR") ?? "./.data/artifacts");
  const reportSegments = bool("REPORT_SEGMENTS", true);
  const phaseDelayMs = int("REPORT_PHASE_DELAY_MS", 500, 0, 3600_000);
  const failRate = float("REPORT_FAIL_RATE", 0, 0, 1);
  const retryBackoffMs = int("RETRY_BACKOFF_MS", 1000, 1, 3600_000);
  const progressLingerMs = int("PROGRESS_LINGER_MS", 10, 0, 60_000);
  const idempotencyTtlMs = int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600, 1, 30 * 24 * 3600) * 1000;
  const succeededMs = int("RETENTION_SUCCEEDED_SECONDS", 24 * 3600, 1, 365 * 24 * 3600) * 1000;
  const failedMs = int("RETENTION_FAILED_SECONDS", 7 * 24 * 3600, 1, 365 * 24 * 3600) * 1000;
  const succeededCount = int("RETENTION_SUCCEEDED_COUNT", 0, 0, 100_000_000);
  const failedCount = int("RETENTION_FAILED_COUNT", 0, 0, 100_000_000);
  const eventStreamMaxLen = int("EVENT_STREAM_MAXLEN", 1000, 10, 1_000_000);
  const maxBacklog = int("MAX_BACKLOG", 100_000, 1, 100_000_000);
  // With two or more tenants none may take more than a tenth of the backlog;
  // a lone tenant (open mode, one key's tenant) may take all of it.
  const tenantCount = new Set(apiKeys.map((k) => k.tenant)).size;
  const tenantMaxBacklog = int(
    "TENANT_MAX_BACKLOG",
    tenantCount >= 2 ? Math.ceil(maxBacklog / 10) : maxBacklog,
    1,
    100_000_000,
  );
  const maxRunAtAheadMs = int("MAX_RUN_AT_SECONDS", 30 * 24 * 3600, 1, 366 * 24 * 3600) * 1000;
  const backlogRetryAfterMs = int("BACKLOG_RETRY_AFTER_MS", 5000, 100, 3600_000);
  const cancelPollMs = int("CANCEL_POLL_MS", 500, 50, 60_000);
  const reconcileIntervalMs = int("RECONCILE_INTERVAL_MS", 30_000, 100, 24 * 3600_000);
  const sweepMs = int("RETENTION_SWEEP_MS", 60_000, 100, 24 * 3600_000);
  const watchKeepaliveMs = int("WATCH_KEEPALIVE_MS", 15_000, 100, 3600_000);
  const watchMaxDurationMs = int("WATCH_MAX_DURATION_MS", 3600_000, 1000, 24 * 3600_000);
  const maxTimeoutMs = int("MAX_TIMEOUT_MS", 3600_000, 1000, 24 * 3600_000);
  const readMaxBytes = int("READ_MAX_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024);
  const shutdownGraceMs = int("SHUTDOWN_GRACE_MS", 10_000, 0, 3600_000);
  const logLevel = oneOf("LOG_LEVEL", "info", logLevels);
  const downloadUrlTtlMs = int("DOWNLOAD_URL_TTL_SECONDS", 3600, 1, 7 * 24 * 3600) * 1000;
  const tenantSubmitBurst = int(
    "TENANT_SUBMIT_BURST",
    Math.max(1, Math.ceil(tenantSubmitRate)),
    1,
    1_000_000,
  );
  const tenantMaxWatches = int("TENANT_MAX_WATCHES", 10_000, 0, 10_000_000);
  const logFormat = oneOf("LOG_FORMAT", "json", ["json", "pretty"] as const);
  const apiProcesses = int("API_PROCESSES", 1, 1, 64);
  if (apiProcesses > 1 && resolvedMode !== "api") {
    problems.push(
      `API_PROCESSES: more than one API process needs mode api (got mode ${resolvedMode}); run the worker as a process of its own`,
    );
  }
  const processIndex =
    read("API_PROCESS_INDEX") === undefined ? undefined : int("API_PROCESS_INDEX", 0, 0, 63);
  // Each API process serves its own /metrics: METRICS_PORT, METRICS_PORT+1, ...
  const metricsPortBase = int("METRICS_PORT", 9464, 0, 65535);
  const metricsPort =
    metricsPortBase === 0 ? 0 : Math.min(65535, metricsPortBase + (processIndex ?? 0));
  const metricsHost = read("METRICS_HOST") ?? host;
  const requireAof = bool("REQUIRE_AOF", false);
  const submitWaitAof = int("SUBMIT_WAITAOF", 0, 0, 1) as 0 | 1;
  const handshakeTimeoutMs = int("HANDSHAKE_TIMEOUT_MS", 10_000, 100, 300_000);
  const requestTimeoutMs = int("REQUEST_TIMEOUT_MS", 30_000, 100, 3600_000);
  // Unset, it follows a shorter REQUEST_TIMEOUT_MS down.
  const headersTimeoutMs = int(
    "HEADERS_TIMEOUT_MS",
    Math.min(15_000, requestTimeoutMs),
    100,
    600_000,
  );
  if (headersTimeoutMs > requestTimeoutMs) {
    problems.push(
      `HEADERS_TIMEOUT_MS: must be at most REQUEST_TIMEOUT_MS (got ${headersTimeoutMs} > ${requestTimeoutMs})`,
    );
  }
  const http1KeepAliveTimeoutMs = int("HTTP1_KEEPALIVE_TIMEOUT_MS", 65_000, 100, 3600_000);
  const http2IdleTimeoutMs = int("HTTP2_IDLE_TIMEOUT_MS", 1_200_000, 100, 24 * 3600_000);
  const http2MaxConcurrentStreams = int("HTTP2_MAX_CONCURRENT_STREAMS", 2500, 1, 1_000_000);
  const http2MaxSessionMemoryMb = int("HTTP2_MAX_SESSION_MEMORY_MB", 64, 1, 4096);
  const maxConnections = int("MAX_CONNECTIONS", 20_000, 1, 10_000_000);
  const maxConnectionsPerAddress = int("MAX_CONNECTIONS_PER_ADDRESS", 1000, 0, 10_000_000);
  const maxStreams = int("MAX_STREAMS", 20_000, 1, 10_000_000);
  const maxStreamsPerAddress = int("MAX_STREAMS_PER_ADDRESS", 10_000, 0, 10_000_000);
  const streamMaxDurationMs = int("STREAM_MAX_DURATION_MS", 3600_000, 100, 24 * 3600_000);
  const healthMaxWatches = int("HEALTH_MAX_WATCHES", 1000, 0, 10_000_000);
  const reflectionMaxStreams = int("REFLECTION_MAX_STREAMS", 100, 0, 10_000_000);

  const config: Config = {
    mode: resolvedMode,
    redis: {
      url: redisUrl,
      urlDefaulted: rawRedisUrl === undefined,
      prefix: redisPrefix,
      requireAof,
      submitWaitAof,
      clusterNodes,
      queueShards,
      submitWaitReplicas,
      submitWaitReplicasTimeoutMs,
    },
    api: {
      host,
      port,
      processes: apiProcesses,
      processIndex,
      publicUrl,
      corsOrigins,
      readMaxBytes,
      maxTimeoutMs,
      watchKeepaliveMs,
      watchMaxDurationMs,
      downloadUrlTtlMs,
      handshakeTimeoutMs,
      headersTimeoutMs,
      requestTimeoutMs,
      http1KeepAliveTimeoutMs,
      http2IdleTimeoutMs,
      http2MaxConcurrentStreams,
      http2MaxSessionMemoryMb,
      maxConnections,
      maxConnectionsPerAddress,
      maxStreams,
      maxStreamsPerAddress,
      streamMaxDurationMs,
      healthMaxWatches,
      reflectionMaxStreams,
    },
    worker: {
      concurrency: workerConcurrency,
      shards: workerShards,
      lockDurationMs,
      ...(lockRenewMs === undefined ? {} : { lockRenewMs }),
      stalledIntervalMs,
      cancelPollMs,
      reconcileIntervalMs,
      shutdownGraceMs,
      artifactDir,
      reportSegments,
      reportTypes: perType,
      retryBackoffMs,
      progressLingerMs,
      simulation: { phaseDelayMs, failRate },
    },
    retention: {
      succeededMs,
      failedMs,
      succeededCount,
      failedCount,
      sweepMs,
      eventStreamMaxLen,
      idempotencyTtlMs,
    },
    limits: {
      maxBacklog,
      tenantMaxBacklog,
      maxRunAtAheadMs,
      backlogRetryAfterMs,
      tenantSubmitRate,
      tenantSubmitBurst,
      tenantMaxWatches,
    },
    auth: { apiKeys, allowUnauthenticated, exemptServices: authExemptServices, downloadUrlSecret },
    telemetry: { logLevel, logFormat, metricsPort, metricsHost },
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** What the OpenTelemetry setup needs from the environment (the SDK reads the rest of OTEL_* itself). */
export interface TelemetrySettings {
  /** OTEL_SDK_DISABLED=true: no SDK, no instrumentation, no metrics. */
  disabled: boolean;
  /** The process's mode (the worker alone keeps its contexts without AsyncLocalStorage when nothing is recorded). */
  mode?: Mode;
  /** OTEL_SERVICE_NAME, else a name per mode (unless OTEL_RESOURCE_ATTRIBUTES names the service). */
  serviceName?: string;
  /** Let the SDK build span exporters from OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_* (else: none). */
  exportTraces: boolean;
  /** Push metrics over OTLP (an endpoint is set and OTEL_METRICS_EXPORTER allows it). */
  exportMetricsOtlp: boolean;
  /** OTEL_METRIC_EXPORT_INTERVAL, in ms (default 60000). */
  metricExportIntervalMs: number;
}

/** The default OpenTelemetry service name of each mode. */
export const defaultServiceNames: Record<Mode, string> = {
  api: "report-jobs-api",
  worker: "report-jobs-worker",
  all: "report-jobs",
};

/**
 * Reads the few OTEL_* decisions made before the SDK starts. Never throws: a
 * bad value falls back to its default (the SDK warns about its own variables).
 */
export function loadTelemetrySettings(env: Env, mode?: string): TelemetrySettings {
  const read = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  const list = (name: string) =>
    (read(name) ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== "");
  const resolvedMode = (modes as readonly string[]).includes(mode ?? read("MODE") ?? "all")
    ? ((mode ?? read("MODE") ?? "all") as Mode)
    : "all";
  const namedByResource = /(^|,)\s*service\.name\s*=/.test(read("OTEL_RESOURCE_ATTRIBUTES") ?? "");
  const tracesExporters = list("OTEL_TRACES_EXPORTER");
  const metricsExporters = list("OTEL_METRICS_EXPORTER");
  const endpoint = read("OTEL_EXPORTER_OTLP_ENDPOINT") !== undefined;
  const interval = Number(read("OTEL_METRIC_EXPORT_INTERVAL") ?? "60000");
  return {
    disabled: read("OTEL_SDK_DISABLED")?.toLowerCase() === "true",
    mode: resolvedMode,
    serviceName:
      read("OTEL_SERVICE_NAME") ??
      (namedByResource ? undefined : defaultServiceNames[resolvedMode]),
    exportTraces:
      tracesExporters.length > 0
        ? !tracesExporters.includes("none")
        : endpoint || read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") !== undefined,
    exportMetricsOtlp:
      (metricsExporters.length === 0 || metricsExporters.includes("otlp")) &&
      !metricsExporters.includes("none") &&
      (endpoint || read("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") !== undefined),
    metricExportIntervalMs: Number.isFinite(interval) && interval > 0 ? interval : 60_000,
  };
}
