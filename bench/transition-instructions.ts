import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { pino } from "pino";
import type { JobView } from "../src/domain/job.js";
import { instructionsOf, startCallgrindRedis } from "./callgrind-redis.js";

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

const grind = await startCallgrindRedis("transition-instructions");
const { url, admin, dumps } = grind;
const logger = pino({ level: "silent" });

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
      grind.zero();
      await attempts(s, jobs);
      counts.get(s)?.push(instructionsOf(grind.dump()) / jobsPerRound);
    }
  }
  console.log(
    `transition-instructions: Redis instructions per job, ${rounds} rounds of ${jobsPerRound}`,
  );
  for (const s of subjects) {
    console.log(
      `  ${s.root}${s.whole ? " (STARTED and progress with SUCCEEDED)" : s.fold ? " (progress with SUCCEEDED)" : ""}: ${counts
        .get(s)
        ?.map((x) => Math.round(x))
        .join(" ")}`,
    );
  }
  console.log(`  dumps: ${dumps}`);
} finally {
  for (const s of subjects) s.redis.disconnect();
  grind.stop();
}
