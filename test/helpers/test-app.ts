/**
 * Builds and starts the real app (createApp, as main.ts does) against a test
 * Redis, with its own key prefix, artifact folder and port.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { inject } from "vitest";
import { type App, type AppOptions, createApp } from "../../src/app.js";
import { type Config, loadConfig } from "../../src/config/config.js";
import { freePort } from "../../src/queue/private-redis.js";
import { createLogger } from "../../src/telemetry/logger.js";

/** A started test app. */
export interface TestApp {
  app: App;
  config: Config;
  /** Base URL of the API (when the mode runs it). */
  url: string;
  /** Base URL of the metrics and probe server (/metrics, /healthz, /readyz). */
  metricsUrl: string;
  close(): Promise<void>;
}

/** A fresh key prefix, so tests never see each other's keys. */
export function testPrefix(): string {
  return `t${randomBytes(5).toString("hex")}`;
}

/**
 * The environment a test app gets: fast phases and backoff, silent logs.
 * `env` overrides any of it.
 */
export function testEnv(env: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: testPrefix(),
    HOST: "127.0.0.1",
    REPORT_PHASE_DELAY_MS: "20",
    RETRY_BACKOFF_MS: "50",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    SHUTDOWN_GRACE_MS: "2000",
    // Many apps and processes share this host: each metrics server takes a free port.
    METRICS_PORT: "0",
    ...env,
  };
}

/** Starts an app in `mode` ("all" by default). */
export async function startTestApp(
  env: Record<string, string> = {},
  options: AppOptions & { mode?: "api" | "worker" | "all" } = {},
): Promise<TestApp> {
  const artifactDir = mkdtempSync(path.join(tmpdir(), "report-jobs-artifacts-"));
  const port = await freePort();
  const config = loadConfig(
    testEnv({ PORT: String(port), ARTIFACT_DIR: artifactDir, ...env }),
    options.mode ?? "all",
  );
  const app = createApp(config, {
    logger: createLogger(config.telemetry.logLevel),
    lockDurationMs: 2000,
    stalledIntervalMs: 1000,
    ...options,
  });
  const started = await app.start().catch(async (err: unknown) => {
    await app.close();
    rmSync(artifactDir, { recursive: true, force: true });
    throw err;
  });
  return {
    app,
    config,
    url: started.url ?? config.api.publicUrl,
    metricsUrl: started.metricsUrl ?? "",
    async close() {
      await app.close();
      rmSync(artifactDir, { recursive: true, force: true });
    },
  };
}
