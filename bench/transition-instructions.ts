/**
 * The instructions Redis executes per job for an attempt's four transitions
 * (STARTED with the record back, two PROGRESS, SUCCEEDED, through the
 * applier as the worker runs them, 10 jobs in flight), counted by valgrind's
 * callgrind in a private redis-server: unlike CPU time on a shared machine,
 * the count hardly moves between runs (about 1 %), so two versions of the
 * scripts or the applier compare in one run of a minute. User-space only:
 * the kernel's socket work is not in it.
 *
 *   npx tsx bench/transition-instructions.ts [root ...]
 *
 * Each `root` (default: this checkout) is a checkout whose src/ is measured
 * (an export of another commit with node_modules linked); their rounds take
 * turns. A checkout whose applier takes progress reports with SUCCEEDED
 * (`ApplyOptions.before`) runs a drain's attempt as its worker does with the
 * reports held (PROGRESS_LINGER_MS): STARTED, then SUCCEEDED with both
 * progress reports in it, two calls; the others four calls (all of them
 * with TI_APART=1). A checkout whose applier also takes the attempt's
 * STARTED with SUCCEEDED (`ApplyOptions.started`: the worker holds STARTED
 * too) runs the whole attempt in one call (two as above with TI_HELD=0).
 * Needs valgrind and callgrind_control on the PATH. The dump of the
 * last round of each root stays in the printed folder, for
 * `callgrind_annotate --inclusive=yes --tree=calling`.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { pino } from "pino";
import type { JobView } from "../src/domain/job.js";
import { freePort } from "../src/queue/private-redis.js";
import { seedQueuedJob, transitionModulesOf } from "./checkout-modules.js";

const roots = (
  process.argv.length > 2 ? process.argv.slice(2) : [new URL("..", import.meta.url).pathname]
).map((r) => path.resolve(r));
const jobsPerRound = 500;
const rounds = 2;
const at = 1_700_000_000_000;
const artifact = {
  downloadPath: "/v1/artifacts/j/1-abc/r.csv",
  contentType: "text/csv",
  sizeBytes: 208,
};

const dumps = mkdtempSync(path.join(tmpdir(), "transition-instructions-"));
const port = await freePort();
const server = spawn(
  "valgrind",
  [
    "--tool=callgrind",
    `--callgrind-out-file=${dumps}/callgrind.out`,
    "redis-server",
    "--port",
    String(port),
    "--save",
    "",
    "--appendonly",
    "no",
    "--bind",
    "127.0.0.1",
  ],
  { stdio: "ignore" },
);
const url = `redis://127.0.0.1:${port}`;
// Refused until redis-server listens (slowly, under valgrind): retried.
const admin = new Redis(url, {
  maxRetriesPerRequest: null,
  retryStrategy: (n) => (n > 400 ? null : 100),
});
admin.on("error", () => undefined);
await admin.ping();
const logger = pino({ level: "silent" });

function callgrind(flag: "-z" | "-d"): void {
  execFileSync("callgrind_control", [flag, String(server.pid)], { stdio: "ignore" });
}

/** The instruction count of the newest dump. */
function lastDumpInstructions(): number {
  const files = readdirSync(dumps)
    .filter((f) => /\.out\.\d+$/.test(f))
    .sort((a, b) => Number(a.split(".").pop()) - Number(b.split(".").pop()));
  const text = readFileSync(path.join(dumps, files[files.length - 1] ?? ""), "utf8");
  return Number(/^(?:summary|totals):\s+(\d+)/m.exec(text)?.[1]);
}

/** One checkout under test: its applier on its own connection, its own key prefix. */
async function subjectOf(root: string, index: number) {
  const { createTransitionApplier, createRedisConnection, createKeys, encodeNewRecord } =
    await transitionModulesOf(root);
  const redis = createRedisConnection(url, "command", logger);
  if (redis.status !== "ready") await new Promise((r) => redis.once("ready", r));
  const keys = createKeys(`ti${index}`);
  const transitions = createTransitionApplier({
    redis,
    keys,
    settings: { eventStreamMaxLen: 1000, succeededMs: 86_400_000, failedMs: 86_400_000 },
    logger,
  });
  const applier = path.join(root, "src/queue/transition-applier.ts");
  // Progress reports travel with SUCCEEDED (the worker's fold) in this checkout.
  const source = existsSync(applier) ? readFileSync(applier, "utf8") : "";
  const fold = process.env.TI_APART !== "1" && source.includes("before?:");
  // STARTED travels with SUCCEEDED too (the worker holds it) in this checkout.
  const whole = fold && process.env.TI_HELD !== "0" && source.includes("started?:");
  return { root, redis, keys, transitions, encodeNewRecord, fold, whole };
}
type Subject = Awaited<ReturnType<typeof subjectOf>>;

/** Queued jobs as the submit leaves them (record, idempotency record) and BullMQ's lock on each. */
async function queuedJobs(s: Subject, name: string): Promise<JobView[]> {
  const jobs: JobView[] = [];
  for (let i = 0; i < jobsPerRound; i++)
    jobs.push(await seedQueuedJob(admin, s, `${name}-${i}`, at, 6_000_000));
  return jobs;
}

async function attempts(s: Subject, jobs: JobView[]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      for (let job = jobs[next++]; job !== undefined; job = jobs[next++]) {
        const own = { attempt: 1, token: `t-${job.id}`, lockToken: "lock" };
        const subject = {
          id: job.id,
          tenant: job.tenant,
          reportType: job.reportType,
          createdAt: 0,
        };
        if (s.whole) {
          // What the worker knows from the queue's job, and one call for the attempt.
          const held = { ...subject, idempotencyKeyDigest: job.idempotencyKeyDigest };
          const done = await s.transitions.apply(
            held,
            "succeeded",
            { ...own, at: at + 400, startedAt: at + 100, artifact },
            {
              started: { ...own, at: at + 100, maxAttempts: 3 },
              before: [
                { ...own, progress: 40, phase: "fetch-data", at: at + 200 },
                { ...own, progress: 80, phase: "render", at: at + 300 },
              ],
            } as Record<string, unknown>,
          );
          if (!done.applied) throw new Error(`the attempt of ${job.id} was refused`);
          continue;
        }
        const started = await s.transitions.apply(
          subject,
          "started",
          { ...own, at: at + 100, maxAttempts: 3 },
          { withRecord: true },
        );
        const record = started.applied ? started.record : undefined;
        if (record === undefined) throw new Error(`STARTED of ${job.id} was refused`);
        const t = s.transitions;
        const reports = [
          { ...own, progress: 40, phase: "fetch-data", at: at + 200 },
          { ...own, progress: 80, phase: "render", at: at + 300 },
        ];
        if (!s.fold) for (const report of reports) await t.apply(record, "progress", report);
        // A checkout without the fold ignores the option (its type has no such field).
        const options = s.fold ? ({ before: reports } as Record<string, unknown>) : undefined;
        const done = await t.apply(
          record,
          "succeeded",
          { ...own, at: at + 400, startedAt: at + 100, artifact },
          options,
        );
        if (!done.applied) throw new Error(`SUCCEEDED of ${job.id} was refused`);
      }
    }),
  );
}

const subjects: Subject[] = [];
try {
  for (const [i, root] of roots.entries()) subjects.push(await subjectOf(root, i));
  const counts = new Map<Subject, number[]>(subjects.map((s) => [s, []]));
  for (const s of subjects) await attempts(s, await queuedJobs(s, "warm"));
  for (let r = 0; r < rounds; r++) {
    for (const s of r % 2 === 0 ? subjects : [...subjects].reverse()) {
      const jobs = await queuedJobs(s, `r${r}`);
      callgrind("-z");
      await attempts(s, jobs);
      callgrind("-d");
      counts.get(s)?.push(lastDumpInstructions() / jobsPerRound);
    }
  }
  console.log(
    `transition-instructions: Redis instructions per job, ${rounds} rounds of ${jobsPerRound}`,
  );
  for (const s of subjects) {
    console.log(
      `  ${s.root}${s.fold ? " (progress with SUCCEEDED)" : ""}: ${counts
        .get(s)
        ?.map((x) => Math.round(x))
        .join(" ")}`,
    );
  }
  console.log(`  dumps: ${dumps}`);
} finally {
  for (const s of subjects) s.redis.disconnect();
  admin.disconnect();
  server.kill();
}
