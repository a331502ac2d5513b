/**
 * Runs a comparison: for each round, each setup, each design (the order
 * alternating per round, so neither design always runs first on a machine
 * whose load drifts), on a fresh private redis-server, with the service
 * processes started here and the callers in the load process. Returns every
 * figure; a setup that fails is noted as an error and the run goes on.
 *
 * Setups:
 * - accept: an API, no worker (every job stays queued): GetJob on an empty
 *   queue, then behind a backlog, then submits.
 * - accept-otel-off (ours only): an API with OTEL_SDK_DISABLED=true: submits.
 * - work: an API and one worker, restarted per worker setting: drain at each
 *   concurrency, enqueue-to-complete at a steady rate, then watchers.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { freePort, isListening } from "../../src/queue/private-redis.js";
import { startRedisServer } from "../../test/helpers/redis-server.js";
import type { GetJobTask, SubmitTask } from "../load.js";
import { createLoadRunner, type LoadRunner } from "../load-runner.js";
import { percentile } from "../measure.js";
import {
  commandStatsPerJob,
  redisClients,
  redisCommandStats,
  redisCpuUs,
  redisScriptCalls,
  redisVersion,
  tcpConnectionsTo,
} from "../proc-stats.js";
import { baseline, type Design, ours } from "./designs.js";
import type { CompareOptions } from "./options.js";
import type { ProbeGc } from "./probe.js";
import { Figures, type RowResult, type RunInfo, results, rowsFor } from "./report.js";
import { type ServiceProcess, startService, waitForService } from "./service-process.js";

/** What a run returns. */
export interface CompareRun {
  results: RowResult[];
  info: RunInfo;
  errors: string[];
}

/** Progress lines (stderr in the CLI). */
export type Progress = (line: string) => void;

/** What a setup works with: one design, one fresh Redis, its processes. */
interface Env {
  o: CompareOptions;
  d: Design;
  round: number;
  runner: LoadRunner;
  figures: Figures;
  progress: Progress;
  redisUrl: string;
  redisPort: number;
  /** The harness's own connection: INFO, pause/resume, polling. */
  admin: Redis;
  /** The design's weekly queue, on `admin`. */
  queue: Queue;
  api?: { proc: ServiceProcess; baseUrl: string; warmedUp: boolean };
  worker?: { proc: ServiceProcess; settings: string };
  startApi(telemetry: boolean): Promise<{ proc: ServiceProcess; baseUrl: string }>;
  useWorker(concurrency: number, phaseDelayMs: number): Promise<ServiceProcess>;
}

interface Setup {
  name: string;
  applies(o: CompareOptions): boolean;
  designs: readonly Design[];
  run(env: Env): Promise<void>;
}

const setups: Setup[] = [
  {
    name: "accept",
    applies: (o) => o.only.includes("submit") || o.only.includes("getjob"),
    designs: [baseline, ours],
    run: (env) => accept(env, true),
  },
  {
    name: "accept-otel-off",
    applies: (o) => o.only.includes("submit"),
    designs: [ours],
    run: (env) => accept(env, false),
  },
  {
    name: "work",
    applies: (o) => ["drain", "latency", "watchers"].some((s) => o.only.includes(s as never)),
    designs: [baseline, ours],
    run: work,
  },
];

/** Runs every round and returns the figures. */
export async function runCompare(o: CompareOptions, progress: Progress): Promise<CompareRun> {
  const began = performance.now();
  const loadStart = os.loadavg()[0] ?? 0;
  const runDir = mkdtempSync(path.join(os.tmpdir(), "report-jobs-compare-"));
  if (o.cpuProfDir !== undefined) mkdirSync(o.cpuProfDir, { recursive: true });
  if (o.heapSamplingDir !== undefined) mkdirSync(o.heapSamplingDir, { recursive: true });
  if (o.logDir !== undefined) mkdirSync(o.logDir, { recursive: true });
  const runner = createLoadRunner("process");
  const figures = new Figures();
  let redis = "unknown";
  try {
    for (let round = 1; round <= o.rounds; round++) {
      const order = (round % 2 === 1 ? [baseline, ours] : [ours, baseline]).filter((d) =>
        o.designs.includes(d.id),
      );
      for (const setup of setups) {
        if (!setup.applies(o)) continue;
        for (const d of order) {
          if (!setup.designs.includes(d)) continue;
          progress(`round ${round}/${o.rounds}: ${d.label}, ${setup.name}`);
          try {
            redis = await withEnv(
              o,
              d,
              round,
              setup.name,
              runner,
              figures,
              progress,
              runDir,
              setup.run,
            );
          } catch (err) {
            figures.error(
              `round ${round}, ${d.label}, ${setup.name}: ${err instanceof Error ? err.message : String(err)}`,
            );
          }
        }
      }
    }
  } finally {
    await runner.close();
    rmSync(runDir, { recursive: true, force: true });
  }
  const cpus = os.cpus();
  const info: RunInfo = {
    node: process.version,
    redis,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    loadAverage: { start: loadStart, end: os.loadavg()[0] ?? 0 },
    seconds: (performance.now() - began) / 1000,
  };
  return { results: results(rowsFor(o), figures), info, errors: figures.errors };
}

/** Sets up a fresh Redis for `d`, runs `body`, and always tears everything down. */
async function withEnv(
  o: CompareOptions,
  d: Design,
  round: number,
  setupName: string,
  runner: LoadRunner,
  figures: Figures,
  progress: Progress,
  runDir: string,
  body: (env: Env) => Promise<void>,
): Promise<string> {
  const server = await startRedisServer();
  const admin = new Redis(server.url, { maxRetriesPerRequest: null });
  admin.on("error", () => undefined);
  const queue = new Queue(d.queue.name, { connection: admin, prefix: d.queue.prefix });
  const artifactDir = mkdtempSync(path.join(runDir, `${d.id}-artifacts-`));
  const tag = `${d.id}-r${round}-${setupName}`;
  const serviceOptions = {
    logDir: o.logDir ?? runDir,
    ...(o.cpuProfDir === undefined ? {} : { cpuProfDir: o.cpuProfDir }),
    ...(o.heapSamplingDir === undefined ? {} : { heapSamplingDir: o.heapSamplingDir }),
  };
  const env: Env = {
    o,
    d,
    round,
    runner,
    figures,
    progress,
    redisUrl: server.url,
    redisPort: server.port,
    admin,
    queue,
    async startApi(telemetry) {
      const port = await freePort();
      const proc = startService(
        d.api(`${tag}-api`, {
          redisUrl: server.url,
          port,
          artifactDir,
          telemetry,
          maxWatchers: o.watchers,
        }),
        serviceOptions,
      );
      env.api = { proc, baseUrl: `http://127.0.0.1:${port}`, warmedUp: false };
      const t0 = performance.now();
      await waitForService(proc, () => isListening("127.0.0.1", port, 200));
      progress(`  ${d.label}: API up in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return env.api;
    },
    async useWorker(concurrency, phaseDelayMs) {
      const settings = `c${concurrency}-d${phaseDelayMs}`;
      if (env.worker?.settings === settings) return env.worker.proc;
      if (env.worker !== undefined) {
        await env.worker.proc.stop();
        env.worker = undefined;
        await waitFor(
          async () => (await queue.getWorkersCount()) === 0,
          10_000,
          "the old worker to leave",
        );
      }
      const proc = startService(
        d.worker(`${tag}-worker-${settings}`, {
          redisUrl: server.url,
          artifactDir,
          concurrency,
          phaseDelayMs,
          telemetry: o.workTelemetry,
        }),
        serviceOptions,
      );
      env.worker = { proc, settings };
      const t0 = performance.now();
      await waitForService(proc, async () => (await queue.getWorkersCount()) > 0);
      progress(
        `  ${d.label}: worker (${settings}) up in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      return proc;
    },
  };
  try {
    const version = await redisVersion(admin);
    await body(env);
    return version;
  } finally {
    await env.worker?.proc.stop().catch(() => undefined);
    await env.api?.proc.stop().catch(() => undefined);
    await queue.close().catch(() => undefined);
    admin.disconnect();
    await server.stop();
    rmSync(artifactDir, { recursive: true, force: true });
  }
}

/** Polls `check` every `intervalMs` until true; throws after `timeoutMs`. */
async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** What a closed-loop task says; the harness adds the API's URL and the timing. */
type ApiCall =
  | Omit<SubmitTask, "warmupMs" | "durationMs" | "concurrency" | "baseUrl">
  | Omit<GetJobTask, "warmupMs" | "durationMs" | "concurrency" | "baseUrl">;

function requireApi(env: Env): { proc: ServiceProcess; baseUrl: string; warmedUp: boolean } {
  if (env.api === undefined) throw new Error("no API process");
  return env.api;
}

/**
 * One closed-loop measurement against the API, recorded under `key`: req/s,
 * p50, p99 and the API process's CPU time per request over the measured
 * window. The first measurement on a fresh API warms up three times as long
 * (JIT), so it does not favour the measurements after it.
 */
async function closedLoop(env: Env, key: string, task: ApiCall): Promise<void> {
  const api = requireApi(env);
  const warmupMs = env.o.warmupSeconds * 1000 * (api.warmedUp ? 1 : 3);
  api.warmedUp = true;
  const timing = {
    baseUrl: api.baseUrl,
    concurrency: env.o.concurrency,
    durationMs: env.o.seconds * 1000,
    warmupMs,
  };
  const full: SubmitTask | GetJobTask =
    task.kind === "submit" ? { ...task, ...timing } : { ...task, ...timing };
  let cpuStart: number | undefined;
  let redisStart: Promise<number | undefined> = Promise.resolve(undefined);
  const timer = setTimeout(() => {
    cpuStart = api.proc.cpuUs();
    redisStart = redisCpuUs(env.admin).catch(() => undefined);
  }, warmupMs);
  try {
    const m = await env.runner.run(full);
    const cpuEnd = api.proc.cpuUs();
    const [redis0, redis1] = await Promise.all([redisStart, redisCpuUs(env.admin)]);
    // The callers' own cost: a load process near a core's worth is the bottleneck, not the API.
    if (m.requests > 0) {
      env.progress(`    load process CPU ${Math.round(m.cpuUs / m.requests)} µs/req`);
    }
    env.figures.record(env.d.id, `${key}.rps`, m.rps);
    env.figures.record(env.d.id, `${key}.p50Ms`, m.p50Ms);
    env.figures.record(env.d.id, `${key}.p99Ms`, m.p99Ms);
    if (cpuStart !== undefined && m.requests > 0)
      env.figures.record(env.d.id, `${key}.apiCpuUsPerReq`, (cpuEnd - cpuStart) / m.requests);
    if (redis0 !== undefined && m.requests > 0)
      env.figures.record(env.d.id, `${key}.redisCpuUsPerReq`, (redis1 - redis0) / m.requests);
    if (m.errors > 0 || m.requests === 0)
      env.figures.error(
        `round ${env.round}, ${env.d.label}, ${key}: ${m.errors} of ${m.requests + m.errors} calls failed${m.firstError ? `, first: ${m.firstError}` : ""}`,
      );
  } finally {
    clearTimeout(timer);
  }
}

/** Submits `count` jobs through the API and answers their ids; failures are errors. */
async function submitJobs(
  env: Env,
  count: number,
  label: string,
  concurrency = 50,
): Promise<string[]> {
  const r = await env.runner.run({
    kind: "submit-count",
    protocol: env.d.submitProtocol,
    baseUrl: requireApi(env).baseUrl,
    keyPrefix: `r${env.round}-${label}-${Date.now()}`,
    count,
    concurrency,
  });
  if (r.errors > 0)
    throw new Error(
      `submitting ${label} jobs: ${r.errors} of ${count} failed, first: ${r.firstError}`,
    );
  return r.values;
}

async function accept(env: Env, telemetry: boolean): Promise<void> {
  const { o, d } = env;
  await env.startApi(telemetry);
  if (telemetry && o.only.includes("getjob")) {
    const [target] = await submitJobs(env, 1, "getjob-target", 1);
    if (target === undefined) throw new Error("no GetJob target");
    env.progress(`  ${d.label}: GetJob, empty queue`);
    await closedLoop(env, "getjob.empty", {
      kind: "get-job",
      protocol: d.statusProtocol,
      jobId: target,
    });
    env.progress(`  ${d.label}: adding ${o.backlog} waiting jobs`);
    for (let done = 0; done < o.backlog; done += 1000) {
      const n = Math.min(1000, o.backlog - done);
      await env.queue.addBulk(Array.from({ length: n }, (_, i) => d.backlogJob(done + i)));
    }
    env.progress(`  ${d.label}: GetJob, behind ${await env.queue.getWaitingCount()} waiting jobs`);
    await closedLoop(env, "getjob.backlog", {
      kind: "get-job",
      protocol: d.statusProtocol,
      jobId: target,
    });
    // The empty queue again, so that "flat" compares the backlog with empty
    // measurements on both sides of it: what the API's warm-up (JIT, heap)
    // does between two measurements in a row is not read as the backlog's.
    // The backlog (and the first target, waiting with it) goes; a new target.
    await env.queue.drain();
    const [again] = await submitJobs(env, 1, "getjob-target-again", 1);
    if (again === undefined) throw new Error("no GetJob target");
    env.progress(
      `  ${d.label}: GetJob, empty queue again (${await env.queue.getWaitingCount()} waiting)`,
    );
    await closedLoop(env, "getjob.emptyAgain", {
      kind: "get-job",
      protocol: d.statusProtocol,
      jobId: again,
    });
  }
  if (o.only.includes("submit")) {
    const suffix = telemetry ? "" : "Off";
    env.progress(`  ${d.label}: submit, JSON over HTTP/1.1${telemetry ? "" : ", telemetry off"}`);
    await closedLoop(env, `submit.json${suffix}`, {
      kind: "submit",
      protocol: d.submitProtocol,
      keyPrefix: `r${env.round}-json${suffix}`,
    });
    if (d.id === "ours") {
      env.progress(`  ${d.label}: submit, gRPC${telemetry ? "" : ", telemetry off"}`);
      await closedLoop(env, `submit.grpc${suffix}`, {
        kind: "submit",
        protocol: "grpc",
        keyPrefix: `r${env.round}-grpc${suffix}`,
      });
    }
  }
}

async function work(env: Env): Promise<void> {
  const { o } = env;
  await env.startApi(o.workTelemetry);
  if (o.only.includes("drain")) {
    for (const conc of o.drainConcurrency) await drain(env, await env.useWorker(conc, 0), conc);
  }
  if (o.only.includes("latency")) await latency(env, await env.useWorker(o.workerConcurrency, 0));
  if (o.only.includes("watchers"))
    await watchers(env, await env.useWorker(o.watchConcurrency, o.watchPhaseDelayMs));
}

/**
 * Drain: with the queue paused, queue `drainJobs` jobs through the API, then
 * resume it and time the worker until every one has finished, charging the
 * worker's and Redis's CPU time over that span to the jobs.
 */
async function drain(env: Env, worker: ServiceProcess, conc: number): Promise<void> {
  const { o, d, admin, queue } = env;
  await queue.pause();
  env.progress(`  ${d.label}: queueing ${o.drainJobs} jobs (paused)`);
  const ids = await submitJobs(env, o.drainJobs, `drain${conc}`);
  const before = await d.finishedCounts(admin);
  const target = before.succeeded + before.failed + ids.length;
  env.progress(`  ${d.label}: draining at concurrency ${conc}`);
  const gc0 = await worker.gc();
  const cpu0 = worker.cpuUs();
  const redis0 = await redisCpuUs(admin);
  const scripts0 = await redisScriptCalls(admin);
  // BENCH_COMMANDSTATS=1: where Redis's CPU went, per command (its inner
  // commands counted inside each script's time as well).
  const stats0 =
    process.env.BENCH_COMMANDSTATS === "1" ? await redisCommandStats(admin) : undefined;
  const t0 = performance.now();
  await queue.resume();
  let after = before;
  await waitFor(
    async () => {
      after = await d.finishedCounts(admin);
      return after.succeeded + after.failed >= target;
    },
    Math.max(120_000, ids.length * 20),
    `${ids.length} jobs to finish`,
    10,
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = worker.cpuUs();
  const redis1 = await redisCpuUs(admin);
  const scripts1 = await redisScriptCalls(admin);
  const gc1 = await worker.gc();
  const key = `drain.c${conc}`;
  if (stats0 !== undefined) {
    const lines = commandStatsPerJob(stats0, await redisCommandStats(admin), ids.length);
    for (const line of lines) env.progress(`    ${d.label} ${key} Redis: ${line}`);
  }
  recordGc(env, key, gc0, gc1, ids.length);
  env.figures.record(d.id, `${key}.jobsPerSec`, ids.length / seconds);
  env.figures.record(d.id, `${key}.workerCpuUsPerJob`, (cpu1 - cpu0) / ids.length);
  env.figures.record(d.id, `${key}.redisCpuUsPerJob`, (redis1 - redis0) / ids.length);
  // The harness's own INFO and finished-count polls are not scripts.
  env.figures.record(d.id, `${key}.scriptCallsPerJob`, (scripts1 - scripts0) / ids.length);
  if (after.failed > before.failed)
    env.figures.error(
      `round ${env.round}, ${d.label}, ${key}: ${after.failed - before.failed} jobs failed`,
    );
}

/**
 * The worker's heap allocation per job and its young-generation collections
 * per 1,000 jobs over a measured window (the probe's readings at its ends).
 */
function recordGc(env: Env, key: string, from: ProbeGc, to: ProbeGc, jobs: number): void {
  if (jobs === 0) return;
  const { d } = env;
  env.figures.record(
    d.id,
    `${key}.workerAllocKbPerJob`,
    (to.allocatedBytes - from.allocatedBytes) / 1024 / jobs,
  );
  env.figures.record(
    d.id,
    `${key}.workerScavengesPer1000Jobs`,
    ((to.scavenges - from.scavenges) * 1000) / jobs,
  );
}

/**
 * Enqueue to complete: submits at a steady rate (open loop) through the API
 * while the worker runs; each counted job's latency is from the moment its
 * submit was sent to its terminal event's stream id (Redis's clock, 1 ms
 * resolution). CPU per job: API + worker + Redis over the measured window.
 */
async function latency(env: Env, worker: ServiceProcess): Promise<void> {
  const { o, d, admin } = env;
  const api = requireApi(env);
  const warmupMs = o.latencyWarmupSeconds * 1000;
  const cpu = async () => api.proc.cpuUs() + worker.cpuUs() + (await redisCpuUs(admin));
  let start: Promise<number> | undefined;
  let gcStart: Promise<ProbeGc> | undefined;
  const timer = setTimeout(() => {
    start = cpu();
    gcStart = worker.gc();
  }, warmupMs);
  env.progress(
    `  ${d.label}: ${o.rate} jobs/s for ${o.latencyWarmupSeconds} + ${o.latencySeconds} s`,
  );
  try {
    const r = await env.runner.run({
      kind: "submit-rate",
      protocol: d.submitProtocol,
      baseUrl: api.baseUrl,
      keyPrefix: `r${env.round}-latency-${Date.now()}`,
      ratePerSec: o.rate,
      warmupMs,
      durationMs: o.latencySeconds * 1000,
    });
    const cpuEnd = await cpu();
    const gcEnd = await worker.gc();
    const cpuStart = await start;
    const gc0 = await gcStart;
    if (gc0 !== undefined) recordGc(env, "latency", gc0, gcEnd, r.calls.length);
    const ids = r.calls.map((c) => c.value);
    env.progress(
      `  ${d.label}: ${r.ratePerSec.toFixed(0)} jobs/s sent, ${r.late} late; waiting for them to finish`,
    );
    let finished: (number | undefined)[] = [];
    try {
      await waitFor(
        async () => {
          finished = await d.finishedAt(admin, ids);
          return finished.every((f) => f !== undefined);
        },
        60_000,
        "the measured jobs to finish",
        250,
      );
    } catch {
      const left = finished.filter((f) => f === undefined).length;
      env.figures.error(
        `round ${env.round}, ${d.label}, latency: ${left} of ${ids.length} jobs unfinished after 60 s`,
      );
    }
    const latencies = Float64Array.from(
      r.calls.flatMap((c, i) => {
        const f = finished[i];
        return f === undefined ? [] : [f - c.sentAtMs];
      }),
    ).sort();
    env.figures.record(d.id, "latency.p50Ms", percentile(latencies, 0.5));
    env.figures.record(d.id, "latency.p99Ms", percentile(latencies, 0.99));
    env.figures.record(d.id, "latency.ratePerSec", r.ratePerSec);
    if (cpuStart !== undefined && ids.length > 0)
      env.figures.record(d.id, "latency.cpuMsPerJob", (cpuEnd - cpuStart) / 1000 / ids.length);
    if (r.errors > 0)
      env.figures.error(
        `round ${env.round}, ${d.label}, latency: ${r.errors} submits failed, first: ${r.firstError}`,
      );
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Watchers: with the queue paused, queue the watched jobs, open every watch
 * (ours: until each has its replayed history; the baseline: until each holds
 * a blocked XREAD), read the API's memory after a GC before and after, count
 * its Redis connections, then resume and collect every live event's delivery
 * time (from its stream id to its arrival) and the API's CPU time per delivery.
 */
async function watchers(env: Env, _worker: ServiceProcess): Promise<void> {
  const { o, d, admin, queue } = env;
  const api = requireApi(env);
  await queue.pause();
  const ids = await submitJobs(env, o.watchJobs, "watched", 4);
  const blocked0 = (await redisClients(admin)).blocked;
  const mem0 = await api.proc.memory();
  env.progress(`  ${d.label}: opening ${o.watchers} watchers`);
  const t0 = performance.now();
  const open = await env.runner.run({
    kind: "watch-open",
    protocol: d.watchProtocol,
    baseUrl: api.baseUrl,
    jobIds: ids,
    watchers: o.watchers,
    sessions: o.watchSessions,
    timeoutMs: 120_000,
  });
  if (d.watchBlocksRedis)
    await waitFor(
      async () => (await redisClients(admin)).blocked >= blocked0 + open.opened,
      60_000,
      "every watcher's XREAD to block",
    );
  const openMs = performance.now() - t0;
  const connections = tcpConnectionsTo(api.proc.pid, env.redisPort);
  const mem1 = await api.proc.memory();
  env.progress(`  ${d.label}: ${open.opened} open in ${Math.round(openMs)} ms; running the jobs`);
  const cpu0 = api.proc.cpuUs();
  await queue.resume();
  const got = await env.runner.run({ kind: "watch-collect", timeoutMs: 120_000 });
  const cpu1 = api.proc.cpuUs();
  const per = (bytes: number) => (open.opened > 0 ? bytes / 1024 / open.opened : 0);
  env.figures.record(d.id, "watchers.openMs", openMs);
  env.figures.record(d.id, "watchers.apiRedisConnections", connections);
  env.figures.record(d.id, "watchers.rssKbPerWatcher", per(mem1.rss - mem0.rss));
  env.figures.record(d.id, "watchers.heapKbPerWatcher", per(mem1.heapUsed - mem0.heapUsed));
  env.figures.record(d.id, "watchers.deliveryP50Ms", got.p50Ms);
  env.figures.record(d.id, "watchers.deliveryP99Ms", got.p99Ms);
  if (got.deliveries > 0)
    env.figures.record(d.id, "watchers.apiCpuUsPerDelivery", (cpu1 - cpu0) / got.deliveries);
  // Every watcher sees started, two progress events and the terminal one, live.
  const expected = open.opened * 4;
  const problems = [
    open.errors > 0 ? `${open.errors} watches did not open (${open.firstError})` : "",
    got.errors > 0 ? `${got.errors} watches ended in error (${got.firstError})` : "",
    got.deliveries !== expected ? `${got.deliveries} of ${expected} events delivered` : "",
    mem0.gc && mem1.gc ? "" : "no GC before the memory readings (--expose-gc missing)",
  ].filter((p) => p !== "");
  if (problems.length > 0)
    env.figures.error(`round ${env.round}, ${d.label}, watchers: ${problems.join("; ")}`);
}
