/**
 * The instructions Redis executes per SubmitReport, counted by valgrind's
 * callgrind in a private redis-server (the method of
 * transition-instructions.ts: the count hardly moves between runs, so two
 * versions of the submit script or the submitter compare in one run of a
 * minute). User space only: the kernel's socket work is not in it.
 *
 *   npx tsx bench/submit-instructions.ts [root ...] [--baseline] [--top N]
 *
 * Each `root` (default: this checkout) is a checkout whose submitter
 * (src/queue/submitter.ts, createSubmitter as the API process makes it) is
 * measured: a fresh idempotency key per call, the bench's filters, a
 * recording tracer (so the record and the event carry a traceparent, as with
 * telemetry on), 10 calls in flight. `--baseline` adds the naive baseline's
 * submit as its api.ts runs it: GET of the idempotency record, BullMQ's
 * Queue.add, SET EX. Their rounds take turns. Per subject it prints the
 * instructions per submit of each round and, from its last round's dump
 * (`callgrind_annotate --inclusive=yes`), where they went: the `--top`
 * (default 25) costliest functions, per submit. The dumps stay in the
 * printed folder. Needs valgrind and callgrind_control on the PATH.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { pino } from "pino";
import { instructionsOf, startCallgrindRedis } from "./callgrind-redis.js";

import { benchFilters } from "./load.js";

const argv = process.argv.slice(2);
const topAt = argv.indexOf("--top");
const top = topAt >= 0 ? Number(argv[topAt + 1]) : 25;
const withBaseline = argv.includes("--baseline");
const rootArgs = argv.filter((a, i) => !a.startsWith("--") && argv[i - 1] !== "--top");
const roots = (rootArgs.length > 0 ? rootArgs : [new URL("..", import.meta.url).pathname]).map(
  (r) => path.resolve(r),
);
const perRound = Number(process.env.SI_SUBMITS ?? 400);
const rounds = Number(process.env.SI_ROUNDS ?? 2);
const inFlight = 10;

trace.setGlobalTracerProvider(new BasicTracerProvider());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());

const grind = await startCallgrindRedis("submit-instructions");
const { url, dumps } = grind;
const logger = pino({ level: "silent" });

interface Subject {
  name: string;
  submit(key: string): Promise<unknown>;
  close(): void;
  counts: number[];
  dump?: string;
}

/** Checkout `root`'s submitter, on its own connection and key prefix. */
async function oursOf(root: string, index: number): Promise<Subject> {
  const at = (p: string) => pathToFileURL(path.join(root, p)).href;
  const { loadConfig } = await import(at("src/config/config.ts"));
  const { createRedisConnection, waitForReady } = await import(at("src/queue/connections.ts"));
  const { createKeys } = await import(at("src/queue/keys.ts"));
  const { createReportQueues } = await import(at("src/queue/report-queues.ts"));
  const { createSubmitter } = await import(at("src/queue/submitter.ts"));
  // As bench:compare starts the API: the backlog bound never answers.
  const config = loadConfig({ REDIS_URL: url, MAX_BACKLOG: "100000000" });
  const redis = createRedisConnection(url, "command", logger);
  await waitForReady(redis, 30_000);
  const keys = createKeys(`si${index}`);
  const queues = createReportQueues({ connection: redis, keys, logger });
  const submitter = createSubmitter({
    redis,
    queues: queues.byType,
    keys,
    settings: {
      worker: config.worker,
      retention: config.retention,
      limits: config.limits,
      redis: { submitWaitAof: 0 },
    },
  });
  return {
    name: root,
    counts: [],
    submit: (key) =>
      submitter.submit({
        tenant: "default",
        userId: "bench-user",
        reportType: "weekly",
        filters: benchFilters,
        priority: "normal",
        idempotencyKey: key,
      }),
    close: () => redis.disconnect(),
  };
}

/** The naive baseline's submit (bench/baselines/express-bullmq/api.ts), its Redis calls only. */
async function baselineSubject(): Promise<Subject> {
  const prefix = "naive";
  const redis = new Redis(url);
  const queue = new Queue("reports", { connection: { url }, prefix });
  await queue.waitUntilReady();
  return {
    name: "baseline (GET, Queue.add, SET EX)",
    counts: [],
    async submit(key) {
      const recordKey = `${prefix}:idem:${key}`;
      const existing = await redis.get(recordKey);
      if (existing !== null) return existing;
      const jobId = createHash("sha256").update(key).digest("base64url").slice(0, 22);
      await queue.add(
        "weekly",
        { userId: "bench-user", reportType: "weekly", filters: benchFilters },
        {
          jobId,
          attempts: 5,
          backoff: { type: "exponential", delay: 1000 },
          removeOnComplete: { age: 24 * 3600 },
          removeOnFail: { age: 7 * 24 * 3600 },
        },
      );
      await redis.set(recordKey, jobId, "EX", 24 * 3600);
      return jobId;
    },
    close: () => {
      void queue.close();
      redis.disconnect();
    },
  };
}

async function submits(s: Subject, round: string): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (let i = next++; i < perRound; i = next++) await s.submit(`${round}-${i}`);
    }),
  );
}

/** The `top` costliest functions of `dump`, inclusive, per submit (thousands). */
function breakdown(dump: string): string[] {
  const out = execFileSync("callgrind_annotate", ["--inclusive=yes", dump], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  const rows: string[] = [];
  for (const line of out.split("\n")) {
    const m = /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (m === null) continue;
    const n = Number(m[1]?.replaceAll(",", ""));
    const fn = (m[2] ?? "").replace(/^.*?:/, "").replace(/ \[.*$/, "");
    if (rows.length >= top) break;
    rows.push(`${(n / perRound / 1000).toFixed(1).padStart(8)}k  ${fn}`);
  }
  return rows;
}

const subjects: Subject[] = [];
try {
  for (const [i, root] of roots.entries()) subjects.push(await oursOf(root, i));
  if (withBaseline) subjects.push(await baselineSubject());
  for (const s of subjects) await submits(s, `warm-${s.name}`);
  for (let r = 0; r < rounds; r++) {
    for (const s of r % 2 === 0 ? subjects : [...subjects].reverse()) {
      grind.zero();
      await submits(s, `r${r}-${s.name}`);
      s.dump = grind.dump();
      s.counts.push(instructionsOf(s.dump) / perRound);
    }
  }
  console.log(
    `submit-instructions: Redis instructions per submit, ${rounds} rounds of ${perRound} (${inFlight} in flight)`,
  );
  for (const s of subjects) {
    console.log(`  ${s.name}: ${s.counts.map((x) => Math.round(x)).join(" ")}`);
  }
  for (const s of subjects) {
    if (s.dump === undefined) continue;
    console.log(`\n${s.name}: inclusive, thousands per submit (${s.dump})`);
    for (const row of breakdown(s.dump)) console.log(row);
  }
  console.log(`\n  dumps: ${dumps}`);
} finally {
  for (const s of subjects) s.close();
  grind.stop();
  process.exit(0);
}
