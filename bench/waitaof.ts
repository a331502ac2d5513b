/**
 * What SUBMIT_WAITAOF=1 costs a submit: the submitter (the one submit script,
 * then WAITAOF on the same connection) against a Redis with WAITAOF, with
 * appendfsync always and everysec, off and on, one call in flight and 16.
 * Prints requests/s and latency percentiles per case.
 *
 *     REDIS_72_SERVER=/path/to/valkey-server npx tsx bench/waitaof.ts
 *
 * REDIS_72_SERVER names a server with WAITAOF (Redis 7.2+, or valkey-server,
 * e.g. from Debian bookworm-backports); BENCH_SECONDS (default 3) sets each
 * window. Uses the machine's disk as is: compare cases of one run only.
 */
import { pino } from "pino";
import { loadConfig } from "../src/config/config.js";
import { createRedisConnection, waitForReady } from "../src/queue/connections.js";
import { createKeys } from "../src/queue/keys.js";
import { createReportQueues } from "../src/queue/report-queues.js";
import { createSubmitter } from "../src/queue/submitter.js";
import { startRedisServer } from "../test/helpers/redis-server.js";
import { measure } from "./measure.js";

const binary = process.env.REDIS_72_SERVER;
if (binary === undefined) {
  process.stderr.write("set REDIS_72_SERVER to a redis-server (7.2+) or valkey-server binary\n");
  process.exit(2);
}
const seconds = Number(process.env.BENCH_SECONDS ?? "3");
const logger = pino({ level: "silent" });

const rows: string[] = [];
for (const fsync of ["always", "everysec"] as const) {
  const server = await startRedisServer({
    binary,
    appendonly: true,
    args: ["--appendfsync", fsync],
  });
  try {
    for (const waitAof of [0, 1] as const) {
      for (const concurrency of [1, 16]) {
        const config = loadConfig({ REDIS_URL: server.url, MAX_BACKLOG: "100000000" });
        const redis = createRedisConnection(server.url, "command", logger);
        await waitForReady(redis, 5000);
        const keys = createKeys(`b${fsync}${waitAof}${concurrency}`);
        const queues = createReportQueues({ connection: redis, keys, logger });
        const submitter = createSubmitter({
          redis,
          queues: queues.byType,
          keys,
          settings: {
            worker: config.worker,
            retention: config.retention,
            limits: config.limits,
            redis: { submitWaitAof: waitAof },
          },
        });
        const m = await measure(
          () =>
            submitter.submit({
              tenant: "bench",
              userId: "u",
              reportType: "weekly",
              filters: {},
              priority: "normal",
            }),
          { concurrency, durationMs: seconds * 1000, warmupMs: 500 },
        );
        rows.push(
          [
            `appendfsync ${fsync}`.padEnd(21),
            `SUBMIT_WAITAOF=${waitAof}`.padEnd(17),
            `in flight ${concurrency}`.padEnd(13),
            `${Math.round(m.rps)} /s`.padStart(9),
            `p50 ${m.p50Ms.toFixed(2)} ms`.padStart(14),
            `p99 ${m.p99Ms.toFixed(2)} ms`.padStart(15),
            m.errors > 0 ? `  ${m.errors} errors (${m.firstError})` : "",
          ].join(" "),
        );
        await queues.close();
        redis.disconnect();
      }
    }
  } finally {
    await server.stop();
  }
}
process.stdout.write(`${rows.join("\n")}\n`);
