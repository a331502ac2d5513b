/**
 * The report-jobs benchmark: the accept path (SubmitReport) against raw
 * BullMQ `queue.add` on the same Redis in the same run, and GetJob with an
 * empty queue against GetJob behind a large backlog of waiting jobs.
 *
 * It starts its own redis-server (persistence off, so the disk does not
 * decide the figures) and the service in this process in `api` mode: no
 * worker consumes, so every submitted job stays queued and only the accept
 * path is measured. The callers run in a load process of their own (or
 * inline, on the service's event loop, with `callers: "inline"`), and so does
 * the raw `queue.add` baseline: both sides of every ratio are driven from the
 * same place.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { ReportType } from "../gen/reports/v1/job_pb.js";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { createDualServer } from "../src/api/server.js";
import { type App, createApp } from "../src/app.js";
import { loadConfig } from "../src/config/config.js";
import { queueNameFor } from "../src/queue/keys.js";
import { freePort } from "../src/queue/private-redis.js";
import { createLogger } from "../src/telemetry/logger.js";
import { startRedisServer } from "../test/helpers/redis-server.js";
import { benchFilters, type GetJobTask, type RawAddTask, type SubmitTask } from "./load.js";
import { createLoadRunner } from "./load-runner.js";
import type { Measurement } from "./measure.js";
import { redisCpuUs as readRedisCpuUs, redisVersion } from "./proc-stats.js";

/** How the benchmark runs. */
export interface BenchOptions {
  /** Measured seconds per measurement. */
  seconds: number;
  /** Warm-up seconds before each measurement (not counted). */
  warmupSeconds: number;
  /** Calls in flight at every moment, for every measurement. */
  concurrency: number;
  /** Waiting jobs to put in the queue for the second GetJob measurement. */
  backlog: number;
  /**
   * Where the callers run: "process" (a child process: the service's event
   * loop only serves, as with remote callers) or "inline" (on the service's
   * own event loop, which then pays for both ends of every call).
   */
  callers: "process" | "inline";
}

/** The defaults of `npm run bench`. */
export const defaultBenchOptions: BenchOptions = {
  seconds: 5,
  warmupSeconds: 1,
  concurrency: 64,
  backlog: 20_000,
  callers: "process",
};

/**
 * One measurement with what each call cost in CPU time, in microseconds per
 * successful call: the callers' process, the service's process (this one) and
 * redis-server. CPU time is a steadier figure than requests/s on a machine
 * that is busy with other work. With `callers: "inline"` the caller and
 * service figures are the same process, counted in both.
 */
export interface Figures extends Measurement {
  cpuPerCallUs: { caller: number; service: number; redis: number };
}

/** Everything one run measured. Ratios are requests/s over requests/s. */
export interface BenchResults {
  options: BenchOptions;
  environment: { node: string; redis: string; cpus: number; cpuModel: string };
  submit: {
    /** SubmitReport over the Connect protocol, JSON, HTTP/1.1; a new job per call. */
    connectJson: Figures;
    /** SubmitReport over gRPC, HTTP/2; a new job per call. */
    grpc: Figures;
    /** BullMQ `queue.add` on its own Queue and prefix, same Redis, same concurrency. */
    rawQueueAdd: Figures;
    connectJsonVsRaw: number;
    grpcVsRaw: number;
    /**
     * The framework's floor: a SubmitReport handler that does nothing, on the
     * same server stack (connect-node behind the one-port server), over the
     * same protocols. What no SubmitReport can beat on this machine.
     */
    noopConnectJson: Figures;
    noopGrpc: Figures;
    /** The service's SubmitReport over the no-op handler's throughput. */
    connectJsonVsNoop: number;
    grpcVsNoop: number;
  };
  getJob: {
    /** GetJob as a Connect GET (JSON, HTTP/1.1) with only the target job queued. */
    emptyQueue: Figures;
    /** The same, behind `waitingJobs` jobs in BullMQ's wait list. */
    behindBacklog: Figures;
    waitingJobs: number;
    backlogVsEmpty: number;
  };
}

/** Reports progress lines (to stderr in `npm run bench`). */
export type ProgressSink = (line: string) => void;

/** Runs every measurement in one go and returns the figures. */
export async function runReportBenchmark(
  options: BenchOptions = defaultBenchOptions,
  progress: ProgressSink = () => {},
): Promise<BenchResults> {
  const timing = {
    concurrency: options.concurrency,
    durationMs: options.seconds * 1000,
    warmupMs: options.warmupSeconds * 1000,
  };
  const runId = randomBytes(4).toString("hex");
  const redisServer = await startRedisServer();
  const artifactDir = mkdtempSync(path.join(os.tmpdir(), "report-jobs-bench-"));
  const cleanups: (() => Promise<void> | void)[] = [
    () => redisServer.stop(),
    () => rmSync(artifactDir, { recursive: true, force: true }),
  ];
  try {
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
    cleanups.unshift(() => void redis.disconnect());
    const redisServerVersion = await redisVersion(redis);

    const port = await freePort();
    const config = loadConfig(
      {
        REDIS_URL: redisServer.url,
        REDIS_PREFIX: `bench${runId}`,
        HOST: "127.0.0.1",
        PORT: String(port),
        ARTIFACT_DIR: artifactDir,
        LOG_LEVEL: "silent",
        // A free metrics port: a service running on this host keeps 9464.
        METRICS_PORT: "0",
        // Every measurement adds jobs that nobody consumes; the backlog bound
        // must not turn the accept path into RESOURCE_EXHAUSTED mid-run.
        MAX_BACKLOG: "100000000",
      },
      "api",
    );
    const app: App = createApp(config, { logger: createLogger("silent") });
    cleanups.unshift(() => app.close());
    const started = await app.start();
    const baseUrl = started.url ?? config.api.publicUrl;

    const runner = createLoadRunner(options.callers);
    cleanups.unshift(() => runner.close());
    const redisCpuUs = () => readRedisCpuUs(redis);
    // Runs a task and charges each call its CPU time in every process,
    // sampled over the measured window (after the warm-up).
    const load = {
      async run(task: SubmitTask | GetJobTask | RawAddTask): Promise<Figures> {
        let start: Promise<{ service: NodeJS.CpuUsage; redis: number }> | undefined;
        const timer = setTimeout(() => {
          start = redisCpuUs().then((r) => ({ service: process.cpuUsage(), redis: r }));
        }, task.warmupMs);
        try {
          const m: Measurement = await runner.run(task);
          const service = process.cpuUsage();
          const redisNow = await redisCpuUs();
          const before = await start;
          const per = (us: number) => (m.requests > 0 ? us / m.requests : 0);
          return {
            ...m,
            cpuPerCallUs: {
              caller: per(m.cpuUs),
              service: before
                ? per(service.user + service.system - before.service.user - before.service.system)
                : 0,
              redis: before ? per(redisNow - before.redis) : 0,
            },
          };
        } finally {
          clearTimeout(timer);
        }
      },
    };

    // GetJob first, while the queue holds nothing but the target job.
    const setup = createClient(
      ReportService,
      createConnectTransport({ baseUrl, httpVersion: "1.1" }),
    );
    const target = await setup.submitReport({
      userId: "bench-user",
      reportType: ReportType.WEEKLY,
      filters: benchFilters,
    });
    progress(`GetJob (Connect GET, HTTP/1.1), empty queue: ${describe(options)}`);
    // The first measurement also warms up the service's code paths (JIT); a
    // longer warm-up keeps that from favouring the measurements after it.
    const emptyQueue = await load.run({
      kind: "get-job",
      baseUrl,
      jobId: target.jobId,
      ...timing,
      warmupMs: timing.warmupMs * 3,
    });

    // The queue the service puts weekly reports in: the backlog GetJob must not feel.
    const serviceQueue = new Queue(queueNameFor("weekly"), {
      connection: redis,
      prefix: app.keys.bullPrefix,
    });
    cleanups.unshift(() => serviceQueue.close());
    progress(`adding ${options.backlog} waiting jobs with queue.addBulk`);
    await fillWaiting(serviceQueue, options.backlog);
    const waitingJobs = await serviceQueue.getWaitingCount();
    progress(`GetJob (Connect GET, HTTP/1.1), behind ${waitingJobs} waiting jobs`);
    const behindBacklog = await load.run({
      kind: "get-job",
      baseUrl,
      jobId: target.jobId,
      ...timing,
    });

    progress("SubmitReport (Connect JSON, HTTP/1.1), unique idempotency keys");
    const submitConnect = await load.run({
      kind: "submit",
      protocol: "connect-json",
      baseUrl,
      keyPrefix: `bench-${runId}-cj`,
      ...timing,
    });
    progress("SubmitReport (gRPC, HTTP/2), unique idempotency keys");
    const submitGrpc = await load.run({
      kind: "submit",
      protocol: "grpc",
      baseUrl,
      keyPrefix: `bench-${runId}-grpc`,
      ...timing,
    });
    progress("raw BullMQ queue.add");
    const raw = await load.run({
      kind: "raw-add",
      redisUrl: redisServer.url,
      bullPrefix: `benchraw${runId}`,
      ...timing,
    });

    // The framework floor: the same server stack with a SubmitReport that does nothing.
    const noopServer = createDualServer(
      connectNodeAdapter({
        routes: (router) =>
          router.service(ReportService, {
            submitReport: () => ({ jobId: "noop", statusUrl: "", deduplicated: false }),
          }),
      }),
      { keepaliveMs: 30_000, logger: createLogger("silent") },
    );
    const noopAddress = await noopServer.listen(0, "127.0.0.1");
    cleanups.unshift(() => noopServer.close(1000));
    const noopUrl = `http://127.0.0.1:${noopAddress.port}`;
    progress("no-op SubmitReport handler (framework floor), Connect JSON and gRPC");
    const noopConnect = await load.run({
      kind: "submit",
      protocol: "connect-json",
      baseUrl: noopUrl,
      keyPrefix: `noop-${runId}-cj`,
      ...timing,
    });
    const noopGrpc = await load.run({
      kind: "submit",
      protocol: "grpc",
      baseUrl: noopUrl,
      keyPrefix: `noop-${runId}-grpc`,
      ...timing,
    });

    const cpus = os.cpus();
    return {
      options,
      environment: {
        node: process.version,
        redis: redisServerVersion,
        cpus: cpus.length,
        cpuModel: cpus[0]?.model.trim() ?? "unknown",
      },
      submit: {
        connectJson: submitConnect,
        grpc: submitGrpc,
        rawQueueAdd: raw,
        connectJsonVsRaw: ratio(submitConnect.rps, raw.rps),
        grpcVsRaw: ratio(submitGrpc.rps, raw.rps),
        noopConnectJson: noopConnect,
        noopGrpc,
        connectJsonVsNoop: ratio(submitConnect.rps, noopConnect.rps),
        grpcVsNoop: ratio(submitGrpc.rps, noopGrpc.rps),
      },
      getJob: {
        emptyQueue,
        behindBacklog,
        waitingJobs,
        backlogVsEmpty: ratio(behindBacklog.rps, emptyQueue.rps),
      },
    };
  } finally {
    for (const cleanup of cleanups) {
      try {
        await cleanup();
      } catch {
        // Every cleanup runs; a failed one must not leave redis-server behind.
      }
    }
  }
}

/** Adds `count` plain jobs to the wait list in chunks of 1,000 (one round trip each). */
async function fillWaiting(queue: Queue, count: number): Promise<void> {
  const chunk = 1000;
  for (let done = 0; done < count; done += chunk) {
    const n = Math.min(chunk, count - done);
    await queue.addBulk(
      Array.from({ length: n }, (_, i) => ({
        name: "weekly",
        data: {
          tenant: "default",
          userId: `filler-${done + i}`,
          reportType: "weekly",
          filters: benchFilters,
        },
      })),
    );
  }
}

function ratio(a: number, b: number): number {
  return b > 0 ? a / b : 0;
}

function describe(o: BenchOptions): string {
  return `${o.concurrency} in flight, ${o.warmupSeconds} s warm-up, ${o.seconds} s measured, callers ${o.callers}`;
}

/** The results as a compact, aligned table (one measurement a line). */
export function formatTable(r: BenchResults): string {
  const { submit, getJob } = r;
  const rows: [string, Figures, string][] = [
    [
      "SubmitReport  Connect JSON, HTTP/1.1",
      submit.connectJson,
      `${x(submit.connectJsonVsRaw, "raw")}, ${x(submit.connectJsonVsNoop, "no-op")}`,
    ],
    [
      "SubmitReport  gRPC, HTTP/2",
      submit.grpc,
      `${x(submit.grpcVsRaw, "raw")}, ${x(submit.grpcVsNoop, "no-op")}`,
    ],
    ["raw BullMQ queue.add", submit.rawQueueAdd, "baseline"],
    [
      "no-op handler  Connect JSON, HTTP/1.1",
      submit.noopConnectJson,
      x(ratio(submit.noopConnectJson.rps, submit.rawQueueAdd.rps), "raw"),
    ],
    [
      "no-op handler  gRPC, HTTP/2",
      submit.noopGrpc,
      x(ratio(submit.noopGrpc.rps, submit.rawQueueAdd.rps), "raw"),
    ],
    ["GetJob  Connect GET, empty queue", getJob.emptyQueue, "baseline"],
    [
      `GetJob  Connect GET, ${getJob.waitingJobs} waiting`,
      getJob.behindBacklog,
      x(getJob.backlogVsEmpty, "empty"),
    ],
  ];
  const head = [
    "measurement",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "ratio",
    "CPU µs/call: caller",
    "service",
    "redis",
  ];
  const body = rows.map(([name, m, rel]) => [
    name,
    m.rps.toFixed(0),
    m.p50Ms.toFixed(2),
    m.p99Ms.toFixed(2),
    String(m.errors),
    rel,
    m.cpuPerCallUs.caller.toFixed(0),
    m.cpuPerCallUs.service.toFixed(0),
    m.cpuPerCallUs.redis.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]?.length ?? 0)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ");
  const e = r.environment;
  const o = r.options;
  return [
    `report-jobs benchmark: ${o.concurrency} concurrent callers, ${o.seconds} s per measurement after ${o.warmupSeconds} s warm-up`,
    `node ${e.node}, redis ${e.redis}, ${e.cpus} x ${e.cpuModel}; callers ${o.callers === "process" ? "in their own process" : "on the service's thread"}`,
    "",
    line(head),
    ...body.map(line),
  ].join("\n");
}

function x(v: number, of: string): string {
  return `${v.toFixed(2)}x ${of}`;
}

/** The results as one JSON line, numbers rounded for reading. */
export function formatJson(r: BenchResults): string {
  return JSON.stringify(r, (_key, value: unknown) =>
    typeof value === "number" && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value,
  );
}
