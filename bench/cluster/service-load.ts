/**
 * The service's own load for `npm run bench:cluster`: an API and a worker
 * (createApp, as main.ts builds them, in this process) on the cluster with
 * REDIS_CLUSTER_NODES and QUEUE_SHARDS, jobs submitted over Connect (gRPC)
 * and run by the simulated generators, every job to SUCCEEDED. Completion is
 * counted from the worker's BullMQ events, so the load itself sends Redis
 * nothing the service would not.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { type App, createApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/config.js";
import { measureCount } from "../measure.js";
import type { ClusterLoad, LoadOutcome } from "./cluster-cost.js";

/** How much of the service's work. */
export interface ServiceLoadOptions {
  jobs: number;
  /** QUEUE_SHARDS. */
  shards: number;
  /** Submits in flight. */
  concurrency: number;
  /** SUBMIT_WAIT_REPLICAS (needs replicas). */
  waitReplicas?: number;
  /** How long the jobs may take to end (default 180 s). */
  timeoutMs?: number;
  /** Submit only, no worker: the cost of accepting a job alone. */
  submitOnly?: boolean;
}

/** A ClusterLoad that runs `jobs` report jobs through the service's API and worker. */
export function createServiceLoad(options: ServiceLoadOptions): ClusterLoad {
  const { jobs, shards, concurrency } = options;
  const timeoutMs = options.timeoutMs ?? 180_000;
  return async (seeds: string): Promise<LoadOutcome> => {
    const artifactDir = mkdtempSync(path.join(tmpdir(), "bench-cluster-artifacts-"));
    const env = {
      REDIS_CLUSTER_NODES: seeds,
      QUEUE_SHARDS: String(shards),
      SUBMIT_WAIT_REPLICAS: String(options.waitReplicas ?? 0),
      REDIS_PREFIX: `bench${Date.now().toString(36)}`,
      HOST: "127.0.0.1",
      PORT: "0",
      METRICS_PORT: "0",
      ARTIFACT_DIR: artifactDir,
      REPORT_PHASE_DELAY_MS: "1",
      WORKER_CONCURRENCY: "32",
      LOG_LEVEL: "silent",
    };
    const logger = pino({ level: "silent" });
    const apps: App[] = [];
    const t0 = performance.now();
    try {
      const api = createApp(loadConfig(env, "api"), { logger });
      apps.push(api);
      const worker = options.submitOnly
        ? undefined
        : createApp(loadConfig(env, "worker"), { logger });
      if (worker) apps.push(worker);
      const { url } = await api.start();
      await worker?.start();
      let processed = 0;
      let failed = 0;
      let expected = Number.POSITIVE_INFINITY;
      let allDone: () => void = () => {};
      const done = new Promise<void>((resolve) => {
        allDone = resolve;
      });
      const settle = () => {
        if (processed + failed >= expected) allDone();
      };
      for (const w of worker?.worker?.all ?? []) {
        w.on("completed", () => {
          processed++;
          settle();
        });
        w.on("failed", (job) => {
          if (job?.finishedOn) {
            failed++;
            settle();
          }
        });
      }
      const client = createClient(ReportService, createGrpcTransport({ baseUrl: url ?? "" }));
      const submitted = await measureCount(
        (seq) =>
          client.submitReport({
            userId: `user-${seq % 50}`,
            reportType: ReportType.WEEKLY,
            idempotencyKey: `bench-${seq}`,
          }),
        { count: jobs, concurrency },
      );
      expected = submitted.values.length;
      if (options.submitOnly) processed = expected;
      settle();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${expected - processed - failed} jobs did not end in time`)),
            timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      return {
        submitted: submitted.values.length,
        processed,
        errors: submitted.errors + failed,
        ...(submitted.firstError === undefined ? {} : { firstError: submitted.firstError }),
        seconds: (performance.now() - t0) / 1000,
      };
    } finally {
      for (const app of apps.reverse()) await app.close();
      rmSync(artifactDir, { recursive: true, force: true });
    }
  };
}
