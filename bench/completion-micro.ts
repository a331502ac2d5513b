/**
 * What folding the SUCCEEDED write into BullMQ's completion of the job saves
 * per job (CompletingWorker, complete-with-transition.lua): a BullMQ worker at
 * concurrency 10 drains jobs whose processor function makes an attempt's four
 * transitions (STARTED with the record back, two PROGRESS, SUCCEEDED) through
 * the applier, as the worker does, with no generator, report file, telemetry
 * or log output; against a private redis-server (persistence off). Two ways,
 * alternating round by round:
 *
 *   separate  the SUCCEEDED write on its own, then BullMQ's moveToFinished
 *             (which fetches the next job): five round trips and scripts per job
 *   folded    the SUCCEEDED write handed to BullMQ's completion: one script
 *             for both, four round trips per job
 *
 * Prints, per way, the worker's CPU µs per job (this process: the applier,
 * BullMQ, ioredis) and Redis's (INFO cpu), per round and their medians, and
 * the script calls per job with Redis's time in them (INFO commandstats).
 *
 *   npx tsx bench/completion-micro.ts [rounds] [jobs per round]
 */
import { spawn } from "node:child_process";
import { type Job, Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { pino } from "pino";
import type { JobView } from "../src/domain/job.js";
import { createRedisConnection } from "../src/queue/connections.js";
import { encodeNewRecord } from "../src/queue/job-record.js";
import { createKeys, queueNameFor } from "../src/queue/keys.js";
import { freePort } from "../src/queue/private-redis.js";
import { createTransitionApplier } from "../src/queue/transition-applier.js";
import { CompletingWorker } from "../src/worker/completing-worker.js";

const rounds = Number(process.argv[2] ?? 6);
const jobsPerRound = Number(process.argv[3] ?? 3000);
const concurrency = 10;

const port = await freePort();
const server = spawn(
  "redis-server",
  ["--port", String(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
  { stdio: "ignore" },
);
const url = `redis://127.0.0.1:${port}`;
const admin = new Redis(url, { retryStrategy: (n) => (n > 50 ? null : 50) });
// Refused until redis-server listens: retried.
admin.on("error", () => undefined);
await admin.ping();
const logger = pino({ level: "info" }, pino.destination({ dest: "/dev/null", sync: true }));
const commands = createRedisConnection(url, "command", logger);
const workerConnection = createRedisConnection(url, "worker", logger);
const keys = createKeys("micro");
const transitions = createTransitionApplier({
  redis: commands,
  keys,
  settings: { eventStreamMaxLen: 1000, succeededMs: 86_400_000, failedMs: 86_400_000 },
  logger,
});
const artifact = {
  downloadPath: "/v1/artifacts/j/1-abc/r.csv",
  contentType: "text/csv",
  sizeBytes: 208,
};
const queueName = queueNameFor("weekly");
const queue = new Queue(queueName, { connection: commands, prefix: keys.bullPrefix });

async function redisCpuSeconds(): Promise<number> {
  const info = await admin.info("cpu");
  const sys = /used_cpu_sys:([\d.]+)/.exec(info)?.[1];
  const user = /used_cpu_user:([\d.]+)/.exec(info)?.[1];
  return Number(sys) + Number(user);
}

/** `count` queued jobs as the submit leaves them (record, idempotency record, BullMQ job), the queue paused. */
async function queuedJobs(name: string, count: number): Promise<void> {
  await queue.pause();
  for (let first = 0; first < count; first += 500) {
    const multi = admin.multi();
    const bulk: { name: string; data: object; opts: { jobId: string } }[] = [];
    for (let i = first; i < Math.min(count, first + 500); i++) {
      const id = `${name}-${i}`;
      const job: JobView = {
        id,
        tenant: "default",
        userId: "u1",
        reportType: "weekly",
        state: "queued",
        progress: 0,
        phase: "",
        attemptsMade: 0,
        maxAttempts: 3,
        failureReason: "",
        createdAt: Date.now(),
        filters: { region: "eu" },
        priority: "normal",
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        idempotencyKeyDigest: `d-${id}`,
      };
      multi
        .hset(keys.job(id), ...encodeNewRecord(job, "fp"))
        .hset(
          keys.idempotency(job.tenant, `d-${id}`),
          "job",
          id,
          "until",
          String(Date.now() + 1000),
        );
      bulk.push({ name: "weekly", data: { tenant: "default" }, opts: { jobId: id } });
    }
    await multi.exec();
    await queue.addBulk(bulk);
  }
}

/** The attempt's STARTED and two PROGRESS writes; the record and the SUCCEEDED input. */
async function attempt(job: Job, token: string) {
  const own = { attempt: 1, token: `t-${job.id}`, lockToken: token };
  const id = job.id as string;
  const started = await transitions.apply(
    { id, tenant: "default", reportType: "weekly", createdAt: Date.now() },
    "started",
    { ...own, at: Date.now(), maxAttempts: 3 },
    { withRecord: true },
  );
  const record = started.applied ? started.record : undefined;
  if (record === undefined) throw new Error(`STARTED of ${id} was refused`);
  const at = Date.now();
  await transitions.apply(record, "progress", { ...own, progress: 40, phase: "fetch-data", at });
  await transitions.apply(record, "progress", { ...own, progress: 80, phase: "render", at });
  return { record, input: { ...own, at: Date.now(), startedAt: at, artifact } };
}

/** Drains `count` queued jobs with one worker of `way`; CPU µs per job. */
async function drain(way: "separate" | "folded", count: number) {
  let done = 0;
  let finished!: () => void;
  const all = new Promise<void>((r) => {
    finished = r;
  });
  const end = () => {
    if (++done === count) finished();
  };
  let worker!: Worker | CompletingWorker<unknown>;
  const opts = {
    connection: workerConnection,
    prefix: keys.bullPrefix,
    concurrency,
    autorun: false,
    removeOnComplete: { count: 0 },
  };
  if (way === "separate") {
    worker = new Worker(
      queueName,
      async (job, token) => {
        const { record, input } = await attempt(job, token as string);
        const r = await transitions.apply(record, "succeeded", input);
        if (!r.applied) throw new Error(`SUCCEEDED of ${job.id} was refused`);
      },
      opts,
    );
    worker.on("completed", end);
  } else {
    const folding = new CompletingWorker(
      queueName,
      async (job, token) => {
        const { record, input } = await attempt(job, token as string);
        folding.handOver(job.id as string, {
          succeeded: transitions.prepare(record, "succeeded", input),
          async settled(outcome) {
            if (outcome instanceof Error || !outcome.applied) {
              throw new Error(`SUCCEEDED of ${job.id} was not applied`);
            }
          },
        });
      },
      opts,
    );
    folding.useConnection(commands);
    folding.on("completed", end);
    worker = folding;
  }
  worker.on("failed", (_job, err) => {
    throw err;
  });
  const running = worker.run();
  await worker.waitUntilReady();
  await admin.config("RESETSTAT");
  const client0 = process.cpuUsage();
  const redis0 = await redisCpuSeconds();
  await queue.resume();
  await all;
  const client = process.cpuUsage(client0);
  const redisUs = ((await redisCpuSeconds()) - redis0) * 1e6;
  const stats = await admin.info("commandstats");
  await worker.close();
  await running;
  // Redis's own time in the scripts (EVALSHA, EVAL) and their calls.
  let scriptUs = 0;
  let scriptCalls = 0;
  for (const m of stats.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+),usec=(\d+)/gm)) {
    scriptCalls += Number(m[2]);
    scriptUs += Number(m[3]);
  }
  return {
    client: (client.user + client.system) / count,
    redis: redisUs / count,
    scripts: scriptUs / count,
    calls: scriptCalls / count,
  };
}

try {
  const ways = ["separate", "folded"] as const;
  for (const way of ways) {
    await queuedJobs(`warm-${way}`, 1000);
    await drain(way, 1000);
  }
  const figures: Record<
    (typeof ways)[number],
    { client: number; redis: number; scripts: number; calls: number }[]
  > = {
    separate: [],
    folded: [],
  };
  for (let r = 1; r <= rounds; r++) {
    // Alternating which way goes first.
    for (const way of r % 2 === 1 ? ways : [...ways].reverse()) {
      await queuedJobs(`r${r}-${way}`, jobsPerRound);
      figures[way].push(await drain(way, jobsPerRound));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  console.log(
    `completion-micro: CPU µs per job, ${rounds} rounds of ${jobsPerRound} jobs, concurrency ${concurrency}`,
  );
  for (const way of ways) {
    const f = figures[way];
    console.log(
      `  ${way.padEnd(8)} worker: ${f.map((x) => Math.round(x.client)).join(" ")}  median ${Math.round(median(f.map((x) => x.client)))}`,
    );
    console.log(
      `  ${"".padEnd(8)} redis:  ${f.map((x) => Math.round(x.redis)).join(" ")}  median ${Math.round(median(f.map((x) => x.redis)))}`,
    );
    console.log(
      `  ${"".padEnd(8)} scripts: ${median(f.map((x) => x.calls)).toFixed(2)} calls, ${f.map((x) => Math.round(x.scripts)).join(" ")} µs  median ${Math.round(median(f.map((x) => x.scripts)))}`,
    );
  }
} finally {
  await queue.close();
  commands.disconnect();
  workerConnection.disconnect();
  admin.disconnect();
  server.kill();
}
