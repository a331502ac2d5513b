/**
 * What an attempt's four transitions (STARTED with the record back, two
 * PROGRESS, SUCCEEDED) cost per job, through the applier as the worker runs
 * them: 10 jobs in flight on one command connection, against a private
 * redis-server (persistence off). Prints, per round, the client's CPU µs per
 * job (this process: building the calls, ioredis, the socket) and Redis's
 * (INFO cpu), then the commands Redis ran per job (INFO commandstats: the
 * scripts, and the commands run inside them).
 *
 *   npx tsx bench/transition-micro.ts [root]
 *
 * `root` (default: this checkout) is the checkout whose src/ is measured:
 * point it at an export of another commit (with node_modules linked) to
 * compare two versions of the scripts or the applier, one after the other.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { Redis } from "ioredis";
import { pino } from "pino";
import type { JobView } from "../src/domain/job.js";
import { freePort } from "../src/queue/private-redis.js";

const root = path.resolve(process.argv[2] ?? new URL("..", import.meta.url).pathname);
const src = (module: string) => path.join(root, "src", module);

const [
  { createTransitionApplier },
  { createRedisConnection },
  { createKeys },
  { encodeNewRecord },
] = (await Promise.all([
  import(src("queue/transition-applier.ts")),
  import(src("queue/connections.ts")),
  import(src("queue/keys.ts")),
  import(src("queue/job-record.ts")),
])) as [
  typeof import("../src/queue/transition-applier.js"),
  typeof import("../src/queue/connections.js"),
  typeof import("../src/queue/keys.js"),
  typeof import("../src/queue/job-record.js"),
];

const rounds = 5;
const jobsPerRound = 3000;
const inFlight = 10;

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
// Log lines are built as in the worker, and written nowhere.
const logger = pino({ level: "info" }, pino.destination({ dest: "/dev/null", sync: true }));
const redis = createRedisConnection(url, "command", logger);
if (redis.status !== "ready") await new Promise((r) => redis.once("ready", r));
const keys = createKeys("micro");
const transitions = createTransitionApplier({
  redis,
  keys,
  settings: { eventStreamMaxLen: 1000, succeededMs: 86_400_000, failedMs: 86_400_000 },
  logger,
});
const artifact = {
  downloadPath: "/v1/artifacts/j/1-abc/r.csv",
  contentType: "text/csv",
  sizeBytes: 208,
};

async function redisCpuSeconds(): Promise<number> {
  const info = await admin.info("cpu");
  const sys = /used_cpu_sys:([\d.]+)/.exec(info)?.[1];
  const user = /used_cpu_user:([\d.]+)/.exec(info)?.[1];
  return Number(sys) + Number(user);
}

/** A queued job as the submit leaves it (record, idempotency record) and BullMQ's lock on it. */
async function queuedJob(id: string): Promise<JobView> {
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
  await admin
    .multi()
    .hset(keys.job(id), ...encodeNewRecord(job, "fp"))
    .hset(keys.idempotency(job.tenant, `d-${id}`), "job", id, "until", String(Date.now() + 1000))
    .set(keys.bullJobLock(job.reportType, id), "lock", "PX", 600_000)
    .exec();
  return job;
}

async function queuedJobs(name: string, count: number): Promise<JobView[]> {
  const jobs: JobView[] = [];
  for (let i = 0; i < count; i++) jobs.push(await queuedJob(`${name}-${i}`));
  return jobs;
}

async function round(jobs: JobView[]) {
  const count = jobs.length;
  const client0 = process.cpuUsage();
  const redis0 = await redisCpuSeconds();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (let job = jobs[next++]; job !== undefined; job = jobs[next++]) {
        const own = { attempt: 1, token: `t-${job.id}`, lockToken: "lock" };
        const started = await transitions.apply(
          { id: job.id, tenant: job.tenant, reportType: job.reportType, createdAt: job.createdAt },
          "started",
          { ...own, at: Date.now(), maxAttempts: 3 },
          { withRecord: true },
        );
        const record = started.applied ? started.record : undefined;
        if (record === undefined) throw new Error(`STARTED of ${job.id} was refused`);
        const at = Date.now();
        await transitions.apply(record, "progress", {
          ...own,
          progress: 40,
          phase: "fetch-data",
          at,
        });
        await transitions.apply(record, "progress", { ...own, progress: 80, phase: "render", at });
        const done = await transitions.apply(record, "succeeded", {
          ...own,
          at: Date.now(),
          startedAt: at,
          artifact,
        });
        if (!done.applied) throw new Error(`SUCCEEDED of ${job.id} was refused`);
      }
    }),
  );
  const client = process.cpuUsage(client0);
  const redisUs = ((await redisCpuSeconds()) - redis0) * 1e6;
  return { client: (client.user + client.system) / count, redis: redisUs / count };
}

try {
  await round(await queuedJobs("warm", 2000));
  // Every round's jobs first, so that the statistics count only the transitions.
  const queued: JobView[][] = [];
  for (let r = 1; r <= rounds; r++) queued.push(await queuedJobs(`r${r}`, jobsPerRound));
  await admin.config("RESETSTAT");
  const figures: { client: number; redis: number }[] = [];
  for (const jobs of queued) figures.push(await round(jobs));
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  console.log(`transition-micro (${root}): CPU µs per job, ${rounds} rounds of ${jobsPerRound}`);
  console.log(
    `  client: ${figures.map((f) => Math.round(f.client)).join(" ")}  median ${Math.round(median(figures.map((f) => f.client)))}`,
  );
  console.log(
    `  redis:  ${figures.map((f) => Math.round(f.redis)).join(" ")}  median ${Math.round(median(figures.map((f) => f.redis)))}`,
  );
  // The bench's own commands.
  const setup = new Set(["info", "config|resetstat"]);
  const stats = (await admin.info("commandstats"))
    .split("\n")
    .map((line) => /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !setup.has(m[1] as string));
  const total = rounds * jobsPerRound;
  console.log("  Redis commands per job (calls, µs), scripts' inner commands included:");
  for (const [, name, calls, usec] of stats) {
    console.log(
      `    ${name}: ${(Number(calls) / total).toFixed(2)}, ${(Number(usec) / total).toFixed(1)} µs`,
    );
  }
} finally {
  redis.disconnect();
  admin.disconnect();
  server.kill();
}
