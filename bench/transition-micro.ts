/**
 * What an attempt's four transitions (STARTED with the record back, two
 * PROGRESS, SUCCEEDED) cost per job, through the applier as the worker runs
 * them: 10 jobs in flight on one command connection, against a private
 * redis-server (persistence off). Prints, per round, the client's CPU µs per
 * job (this process: building the calls, ioredis, the socket) and Redis's
 * (INFO cpu), Redis's time in the scripts (INFO commandstats, EVALSHA: the
 * steadiest of the three on a shared machine), then the commands Redis ran
 * per job (the scripts, and the commands run inside them).
 *
 *   npx tsx bench/transition-micro.ts [root ...]
 *
 * Each `root` (default: this checkout) is a checkout whose src/ is measured:
 * point one at an export of another commit (with node_modules linked) to
 * compare two versions of the scripts or the applier. With several, their
 * rounds take turns in this one process against the same Redis, so the
 * machine's load falls on all of them alike.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { Redis } from "ioredis";
import { pino } from "pino";
import type { JobView } from "../src/domain/job.js";
import { freePort } from "../src/queue/private-redis.js";
import { seedQueuedJob, transitionModulesOf } from "./checkout-modules.js";

const roots = (
  process.argv.length > 2 ? process.argv.slice(2) : [new URL("..", import.meta.url).pathname]
).map((r) => path.resolve(r));

const rounds = Number(process.env.MICRO_ROUNDS ?? 5);
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
const artifact = {
  downloadPath: "/v1/artifacts/j/1-abc/r.csv",
  contentType: "text/csv",
  sizeBytes: 208,
};

/** One checkout under test: its applier on its own connection, its own key prefix. */
async function subjectOf(root: string, index: number) {
  const m = await transitionModulesOf(root);
  const redis = m.createRedisConnection(url, "command", logger);
  if (redis.status !== "ready") await new Promise((r) => redis.once("ready", r));
  const keys = m.createKeys(`micro${index}`);
  const transitions = m.createTransitionApplier({
    redis,
    keys,
    settings: { eventStreamMaxLen: 1000, succeededMs: 86_400_000, failedMs: 86_400_000 },
    logger,
  });
  return { root, redis, keys, transitions, encodeNewRecord: m.encodeNewRecord };
}
type Subject = Awaited<ReturnType<typeof subjectOf>>;

async function redisCpuSeconds(): Promise<number> {
  const info = await admin.info("cpu");
  const sys = /used_cpu_sys:([\d.]+)/.exec(info)?.[1];
  const user = /used_cpu_user:([\d.]+)/.exec(info)?.[1];
  return Number(sys) + Number(user);
}

/** Calls and µs per command name since the last RESETSTAT (the bench's own left out). */
async function commandStats(): Promise<Map<string, { calls: number; usec: number }>> {
  const setup = new Set(["info", "config|resetstat"]);
  const out = new Map<string, { calls: number; usec: number }>();
  for (const line of (await admin.info("commandstats")).split("\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m === null || setup.has(m[1] as string)) continue;
    out.set(m[1] as string, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return out;
}

async function queuedJobs(s: Subject, name: string, count: number): Promise<JobView[]> {
  const jobs: JobView[] = [];
  for (let i = 0; i < count; i++)
    jobs.push(await seedQueuedJob(admin, s, `${name}-${i}`, Date.now(), 600_000));
  return jobs;
}

async function round(s: Subject, jobs: JobView[]) {
  const { transitions } = s;
  const count = jobs.length;
  await admin.config("RESETSTAT");
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
  const stats = await commandStats();
  return {
    client: (client.user + client.system) / count,
    redis: redisUs / count,
    scripts: (stats.get("evalsha")?.usec ?? 0) / count,
    stats,
  };
}

const subjects: Subject[] = [];
try {
  for (const [i, root] of roots.entries()) subjects.push(await subjectOf(root, i));
  for (const s of subjects) await round(s, await queuedJobs(s, "warm", 2000));
  // Every round's jobs first, so that the statistics count only the transitions.
  const queued = new Map<Subject, JobView[][]>();
  for (const s of subjects) {
    const perRound: JobView[][] = [];
    for (let r = 1; r <= rounds; r++) perRound.push(await queuedJobs(s, `r${r}`, jobsPerRound));
    queued.set(s, perRound);
  }
  const figures = new Map<Subject, Awaited<ReturnType<typeof round>>[]>(
    subjects.map((s) => [s, []]),
  );
  for (let r = 0; r < rounds; r++) {
    // Taking turns, and each round in the other order, so neither goes first every time.
    const order = r % 2 === 0 ? subjects : [...subjects].reverse();
    for (const s of order) figures.get(s)?.push(await round(s, queued.get(s)?.[r] ?? []));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const line = (xs: number[]) =>
    `${xs.map((x) => Math.round(x)).join(" ")}  median ${Math.round(median(xs))}`;
  for (const s of subjects) {
    const f = figures.get(s) ?? [];
    console.log(`transition-micro (${s.root}): µs per job, ${rounds} rounds of ${jobsPerRound}`);
    console.log(`  client CPU:      ${line(f.map((x) => x.client))}`);
    console.log(`  redis CPU:       ${line(f.map((x) => x.redis))}`);
    console.log(`  redis, scripts:  ${line(f.map((x) => x.scripts))}`);
    console.log(
      "  Redis commands per job (calls, µs, all rounds), scripts' inner commands included:",
    );
    const total = rounds * jobsPerRound;
    const sums = new Map<string, { calls: number; usec: number }>();
    for (const x of f) {
      for (const [name, v] of x.stats) {
        const sum = sums.get(name) ?? { calls: 0, usec: 0 };
        sum.calls += v.calls;
        sum.usec += v.usec;
        sums.set(name, sum);
      }
    }
    for (const [name, v] of [...sums].sort()) {
      console.log(
        `    ${name}: ${(v.calls / total).toFixed(2)}, ${(v.usec / total).toFixed(1)} µs`,
      );
    }
  }
} finally {
  for (const s of subjects) s.redis.disconnect();
  admin.disconnect();
  server.kill();
}
