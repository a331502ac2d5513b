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

  it("rejects out-of-range integers at both ends", () => {
    expect(configError({ PORT: "65536" }).problems).toHaveLength(1);
    expect(configError({ PORT: "-1" }).problems).toHaveLength(1);
    expect(configError({ EVENT_STREAM_MAXLEN: "9" }).problems).toHaveLength(1);
    expect(configError({ WATCH_KEEPALIVE_MS: "99" }).problems).toHaveLength(1);
    expect(loadConfig({ PORT: "0" }).api.port).toBe(0);
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
