import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/config.js";

/** The ConfigError `env` raises (fails the test if it loads). */
function configError(env: Record<string, string>, mode?: string): ConfigError {
  try {
    loadConfig(env, mode);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected loadConfig to throw a ConfigError");
}

describe("loadConfig()", () => {
  it("works with an empty environment, with the documented defaults", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      mode: "all",
      redis: { url: "redis://127.0.0.1:6379", urlDefaulted: true, prefix: "rpt" },
      api: {
        host: "127.0.0.1",
        port: 8080,
        publicUrl: "http://127.0.0.1:8080",
        watchKeepaliveMs: 15_000,
        corsOrigins: [],
      },
      worker: {
        concurrency: 10,
        artifactDir: path.resolve("./.data/artifacts"),
        simulation: { phaseDelayMs: 500, failRate: 0 },
        retryBackoffMs: 1000,
      },
      retention: {
        idempotencyTtlMs: 24 * 3600 * 1000,
        succeededMs: 24 * 3600 * 1000,
        failedMs: 7 * 24 * 3600 * 1000,
        eventStreamMaxLen: 1000,
      },
      telemetry: { logLevel: "info" },
    });
    for (const t of ["weekly", "monthly", "custom"] as const) {
      expect(c.worker.reportTypes[t].attempts).toBe(5);
      expect(c.worker.reportTypes[t].timeoutMs).toBeGreaterThan(0);
    }
  });

  it("keeps worker locks short enough to recover a dead worker's jobs within 15 s, renewed well within the lock", () => {
    const { worker } = loadConfig({});
    expect(worker.lockDurationMs).toBe(8000);
    expect(worker.stalledIntervalMs).toBe(1000);
    // Unset: an eighth of the lock (report-worker.ts renewInterval).
    expect(worker.lockRenewMs).toBeUndefined();
    expect(worker.lockDurationMs + worker.stalledIntervalMs).toBeLessThanOrEqual(10_000);
    const tuned = loadConfig({
      WORKER_LOCK_DURATION_MS: "20000",
      WORKER_LOCK_RENEW_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "5000",
    }).worker;
    expect(tuned).toMatchObject({
      lockDurationMs: 20_000,
      lockRenewMs: 2000,
      stalledIntervalMs: 5000,
    });
  });

  it("refuses a lock renewed no sooner than it expires", () => {
    const err = configError({ WORKER_LOCK_DURATION_MS: "5000", WORKER_LOCK_RENEW_MS: "5000" });
    expect(err.problems).toEqual([
      expect.stringMatching(
        /^WORKER_LOCK_RENEW_MS: must be below WORKER_LOCK_DURATION_MS \(5000\)/,
      ),
    ]);
  });

  it("treats blank values as unset", () => {
    const c = loadConfig({ PORT: "  ", REDIS_URL: "", LOG_LEVEL: " " });
    expect(c.api.port).toBe(8080);
    expect(c.redis.urlDefaulted).toBe(true);
    expect(c.telemetry.logLevel).toBe("info");
  });

  it("reads overrides, per-report-type settings and the mode argument", () => {
    const c = loadConfig(
      {
        MODE: "worker",
        REDIS_URL: "redis://cache.internal:6380/2",
        PORT: "9000",
        HOST: "::1",
        JOB_ATTEMPTS: "3",
        MONTHLY_ATTEMPTS: "7",
        IDEMPOTENCY_TTL_SECONDS: "3600",
        REPORT_FAIL_RATE: "0.25",
        CORS_ORIGINS: "https://app.example.com, *",
      },
      "api",
    );
    expect(c.mode).toBe("api");
    expect(c.redis.url).toBe("redis://cache.internal:6380/2");
    expect(c.redis.urlDefaulted).toBe(false);
    expect(c.api.port).toBe(9000);
    expect(c.api.publicUrl).toBe("http://[::1]:9000");
    expect(c.worker.reportTypes.weekly.attempts).toBe(3);
    expect(c.worker.reportTypes.monthly.attempts).toBe(7);
    expect(c.retention.idempotencyTtlMs).toBe(3_600_000);
    expect(c.worker.simulation.failRate).toBe(0.25);
    expect(c.api.corsOrigins).toEqual(["https://app.example.com", "*"]);
  });

  it("strips trailing slashes from PUBLIC_URL", () => {
    expect(loadConfig({ PUBLIC_URL: "https://reports.example.com/" }).api.publicUrl).toBe(
      "https://reports.example.com",
    );
  });

  it("reports every problem at once, one line each, naming the variable", () => {
    const err = configError({
      MODE: "everything",
      PORT: "http",
      WORKER_CONCURRENCY: "0",
      REPORT_FAIL_RATE: "2",
      JOB_ATTEMPTS: "1.5",
      LOG_LEVEL: "loud",
      REDIS_PREFIX: "bad prefix!",
      PUBLIC_URL: "ftp://example.com",
      CORS_ORIGINS: "example.com",
      REDIS_URL: "http://example.com",
    });
    const names = err.problems.map((p) => p.split(":")[0]);
    expect(names.sort()).toEqual(
      [
        "CORS_ORIGINS",
        "JOB_ATTEMPTS",
        "LOG_LEVEL",
        "MODE",
        "PORT",
        "PUBLIC_URL",
        "REDIS_PREFIX",
        "REDIS_URL",
        "REPORT_FAIL_RATE",
        "WORKER_CONCURRENCY",
      ].sort(),
    );
    for (const p of err.problems) expect(p).not.toContain("\n");
    const lines = err.message.split("\n");
    expect(lines).toHaveLength(err.problems.length + 1);
    for (const p of err.problems) expect(lines).toContain(`  ${p}`);
    expect(err.problems.find((p) => p.startsWith("PORT:"))).toContain("0 to 65535");
  });

  it("reads the durability settings into the redis slice, one problem line per bad value", () => {
    expect(loadConfig({}).redis).toMatchObject({ requireAof: false, submitWaitAof: 0 });
    expect(loadConfig({ REQUIRE_AOF: "true", SUBMIT_WAITAOF: "1" }).redis).toMatchObject({
      requireAof: true,
      submitWaitAof: 1,
    });
    const err = configError({ REQUIRE_AOF: "always", SUBMIT_WAITAOF: "2" });
    expect(err.problems).toEqual([
      'REQUIRE_AOF: must be true or false (got "always")',
      'SUBMIT_WAITAOF: must be an integer from 0 to 1 (got "2")',
    ]);
  });

  it("stores small reports in segments unless REPORT_SEGMENTS=false", () => {
    expect(loadConfig({}).worker.reportSegments).toBe(true);
    expect(loadConfig({ REPORT_SEGMENTS: "false" }).worker.reportSegments).toBe(false);
    expect(configError({ REPORT_SEGMENTS: "sometimes" }).problems).toEqual([
      'REPORT_SEGMENTS: must be true or false (got "sometimes")',
    ]);
  });

  it("holds progress reports 10 ms by default (PROGRESS_LINGER_MS), 0 turning it off, at most a minute", () => {
    expect(loadConfig({}).worker.progressLingerMs).toBe(10);
    expect(loadConfig({ PROGRESS_LINGER_MS: "0" }).worker.progressLingerMs).toBe(0);
    expect(loadConfig({ PROGRESS_LINGER_MS: "60000" }).worker.progressLingerMs).toBe(60_000);
    for (const bad of ["-1", "60001", "5ms"]) {
      expect(configError({ PROGRESS_LINGER_MS: bad }).problems).toHaveLength(1);
      expect(configError({ PROGRESS_LINGER_MS: bad }).problems[0]).toMatch(/^PROGRESS_LINGER_MS: /);
    }
  });

  it("bounds each tenant's backlog: all of MAX_BACKLOG for a lone tenant, a tenth with two or more", () => {
    const key = (n: number) => `key-${n}-0123456789abcdef`;
    expect(loadConfig({ MAX_BACKLOG: "1000" }).limits.tenantMaxBacklog).toBe(1000);
    expect(
      loadConfig({ MAX_BACKLOG: "1000", API_KEYS: `acme:${key(1)},acme:${key(2)}` }).limits
        .tenantMaxBacklog,
    ).toBe(1000);
    expect(
      loadConfig({ MAX_BACKLOG: "1005", API_KEYS: `acme:${key(1)},globex:${key(2)}` }).limits
        .tenantMaxBacklog,
    ).toBe(101);
    expect(loadConfig({ TENANT_MAX_BACKLOG: "7" }).limits.tenantMaxBacklog).toBe(7);
    expect(configError({ TENANT_MAX_BACKLOG: "0" }).problems).toEqual([
      'TENANT_MAX_BACKLOG: must be an integer from 1 to 100000000 (got "0")',
    ]);
  });

  it("bounds run_at at 30 days ahead unless MAX_RUN_AT_SECONDS says otherwise", () => {
    expect(loadConfig({}).limits.maxRunAtAheadMs).toBe(30 * 86_400_000);
    expect(loadConfig({ MAX_RUN_AT_SECONDS: "3600" }).limits.maxRunAtAheadMs).toBe(3_600_000);
    expect(configError({ MAX_RUN_AT_SECONDS: "0" }).problems).toHaveLength(1);
  });

  it("runs several API processes (API_PROCESSES) in mode api only, each with its own metrics port", () => {
    expect(loadConfig({}).api).toMatchObject({ processes: 1, processIndex: undefined });
    expect(loadConfig({ API_PROCESSES: "4" }, "api").api.processes).toBe(4);
    expect(configError({ API_PROCESSES: "2" }, "all").problems).toEqual([
      "API_PROCESSES: more than one API process needs mode api (got mode all); run the worker as a process of its own",
    ]);
    expect(configError({ API_PROCESSES: "0" }, "api").problems).toHaveLength(1);
    // Set by the primary in each API process it starts.
    const second = loadConfig(
      { API_PROCESSES: "2", API_PROCESS_INDEX: "1", METRICS_PORT: "9500" },
      "api",
    );
    expect(second.api.processIndex).toBe(1);
    expect(second.telemetry.metricsPort).toBe(9501);
    expect(
      loadConfig({ API_PROCESS_INDEX: "1", METRICS_PORT: "0" }, "api").telemetry.metricsPort,
    ).toBe(0);
  });

  it("rejects out-of-range integers at both ends", () => {
    expect(configError({ PORT: "65536" }).problems).toHaveLength(1);
    expect(configError({ PORT: "-1" }).problems).toHaveLength(1);
    expect(configError({ EVENT_STREAM_MAXLEN: "9" }).problems).toHaveLength(1);
    expect(configError({ WATCH_KEEPALIVE_MS: "99" }).problems).toHaveLength(1);
    expect(loadConfig({ PORT: "0" }).api.port).toBe(0);
  });

  it("has the documented defaults for the API port's connection and stream limits", () => {
    expect(loadConfig({}).api).toMatchObject({
      handshakeTimeoutMs: 10_000,
      headersTimeoutMs: 15_000,
      requestTimeoutMs: 30_000,
      http1KeepAliveTimeoutMs: 65_000,
      http2IdleTimeoutMs: 1_200_000,
      http2MaxConcurrentStreams: 2500,
      http2MaxSessionMemoryMb: 64,
      maxConnections: 20_000,
      maxConnectionsPerAddress: 1000,
      maxStreams: 20_000,
      maxStreamsPerAddress: 10_000,
      streamMaxDurationMs: 3_600_000,
      healthMaxWatches: 1000,
      reflectionMaxStreams: 100,
    });
  });

  it("reads the connection and stream limits, 0 turning the per-address and stream caps off", () => {
    const c = loadConfig({
      HANDSHAKE_TIMEOUT_MS: "5000",
      HEADERS_TIMEOUT_MS: "2000",
      REQUEST_TIMEOUT_MS: "4000",
      HTTP1_KEEPALIVE_TIMEOUT_MS: "30000",
      HTTP2_IDLE_TIMEOUT_MS: "60000",
      HTTP2_MAX_CONCURRENT_STREAMS: "100",
      HTTP2_MAX_SESSION_MEMORY_MB: "16",
      MAX_CONNECTIONS: "500",
      MAX_CONNECTIONS_PER_ADDRESS: "0",
      MAX_STREAMS: "800",
      MAX_STREAMS_PER_ADDRESS: "0",
      STREAM_MAX_DURATION_MS: "600000",
      HEALTH_MAX_WATCHES: "0",
      REFLECTION_MAX_STREAMS: "0",
    });
    expect(c.api).toMatchObject({
      handshakeTimeoutMs: 5000,
      headersTimeoutMs: 2000,
      requestTimeoutMs: 4000,
      http1KeepAliveTimeoutMs: 30_000,
      http2IdleTimeoutMs: 60_000,
      http2MaxConcurrentStreams: 100,
      http2MaxSessionMemoryMb: 16,
      maxConnections: 500,
      maxConnectionsPerAddress: 0,
      maxStreams: 800,
      maxStreamsPerAddress: 0,
      streamMaxDurationMs: 600_000,
      healthMaxWatches: 0,
      reflectionMaxStreams: 0,
    });
  });

  it("rejects connection and stream limits out of range, one line each", () => {
    const err = configError({
      HANDSHAKE_TIMEOUT_MS: "0",
      HTTP2_MAX_CONCURRENT_STREAMS: "0",
      HTTP2_MAX_SESSION_MEMORY_MB: "0",
      MAX_CONNECTIONS: "0",
      MAX_CONNECTIONS_PER_ADDRESS: "-1",
      MAX_STREAMS: "0",
      MAX_STREAMS_PER_ADDRESS: "1.5",
      STREAM_MAX_DURATION_MS: "10",
      HEALTH_MAX_WATCHES: "many",
      HTTP2_IDLE_TIMEOUT_MS: "99",
    });
    expect(err.problems.map((p) => p.split(":")[0]).sort()).toEqual(
      [
        "HANDSHAKE_TIMEOUT_MS",
        "HEALTH_MAX_WATCHES",
        "HTTP2_IDLE_TIMEOUT_MS",
        "HTTP2_MAX_CONCURRENT_STREAMS",
        "HTTP2_MAX_SESSION_MEMORY_MB",
        "MAX_CONNECTIONS",
        "MAX_CONNECTIONS_PER_ADDRESS",
        "MAX_STREAMS",
        "MAX_STREAMS_PER_ADDRESS",
        "STREAM_MAX_DURATION_MS",
      ].sort(),
    );
  });

  it("rejects a headers timeout longer than the request timeout, and lowers an unset one to it", () => {
    expect(
      configError({ HEADERS_TIMEOUT_MS: "20000", REQUEST_TIMEOUT_MS: "10000" }).problems,
    ).toEqual(["HEADERS_TIMEOUT_MS: must be at most REQUEST_TIMEOUT_MS (got 20000 > 10000)"]);
    // Unset, the headers timeout follows a shorter request timeout down.
    expect(loadConfig({ REQUEST_TIMEOUT_MS: "1000" }).api.headersTimeoutMs).toBe(1000);
    expect(
      loadConfig({ HEADERS_TIMEOUT_MS: "1000", REQUEST_TIMEOUT_MS: "1000" }).api,
    ).toMatchObject({ headersTimeoutMs: 1000, requestTimeoutMs: 1000 });
  });

  it("never echoes REDIS_URL, which may carry a password", () => {
    const secret = "hunter2-s3cr3t";
    const cases: Record<string, string>[] = [
      { REDIS_URL: `redis://:${secret}@[not-a-host` },
      { REDIS_URL: `http://user:${secret}@example.com:6379` },
      // A valid URL next to another problem must not show up either.
      { REDIS_URL: `redis://user:${secret}@example.com:6379`, PORT: "x" },
    ];
    for (const env of cases) {
      const err = configError(env);
      expect(err.message).not.toContain(secret);
      expect(err.problems.join("\n")).not.toContain(secret);
    }
    expect(configError({ REDIS_URL: `redis://:${secret}@[not-a-host` }).problems).toEqual([
      "REDIS_URL: must be a redis:// or rediss:// URL",
    ]);
  });

  it("accepts rediss:// URLs with credentials", () => {
    const c = loadConfig({ REDIS_URL: "rediss://default:pw@cache.example.com:6380" });
    expect(c.redis.url).toBe("rediss://default:pw@cache.example.com:6380");
  });
});
