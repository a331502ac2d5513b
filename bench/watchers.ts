/**
 * `npm run bench:watchers`: opens WATCHERS (default 10,000) concurrent
 * WatchJob streams over a few HTTP/2 connections against one API process
 * with its own redis-server, and prints how long they took to open, the
 * Redis connection count before, during and after (it must not grow with
 * the watchers: one subscriber fans out), and the process's memory growth.
 */
import { setMaxListeners } from "node:events";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { ReportType } from "../gen/reports/v1/job_pb.js";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config/config.js";
import { freePort } from "../src/queue/private-redis.js";
import { startRedisServer } from "../test/helpers/redis-server.js";

const watchers = Number(process.env.WATCHERS ?? 10_000);
const sessions = Number(process.env.WATCH_SESSIONS ?? 4);
const redisServer = await startRedisServer();
const port = await freePort();
const config = loadConfig(
  {
    REDIS_URL: redisServer.url,
    PORT: String(port),
    LOG_LEVEL: "silent",
    // A free metrics port: a service running on this host keeps 9464.
    METRICS_PORT: "0",
    WATCH_KEEPALIVE_MS: "60000",
  },
  "api",
);
const app = createApp(config);
await app.start();
const redis = new Redis(redisServer.url);
const redisClients = async () =>
  Number(/connected_clients:(\d+)/.exec(await redis.info("clients"))?.[1]);
try {
  const before = await redisClients();
  const clients = Array.from({ length: sessions }, () =>
    createClient(ReportService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` })),
  );
  // Jobs that stay queued (run_at in an hour), so every watch stays open.
  const jobIds: string[] = [];
  for (let i = 0; i < 20; i++) {
    const res = await clients[0]?.submitReport({
      userId: `u${i}`,
      reportType: ReportType.WEEKLY,
      runAt: timestampFromMs(Date.now() + 3600_000),
    });
    if (res) jobIds.push(res.jobId);
  }
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const rssBefore = process.memoryUsage().rss;
  const began = Date.now();
  const open = Array.from({ length: watchers }, async (_, i) => {
    try {
      for await (const _res of clients[i % sessions]?.watchJob(
        { jobId: jobIds[i % jobIds.length] ?? "" },
        { signal: stop.signal },
      ) ?? []) {
        // Events and keepalives are not counted here.
      }
    } catch {
      // Aborted at the end.
    }
  });
  while ((app.hub?.listenerCount ?? 0) < watchers) await new Promise((r) => setTimeout(r, 50));
  const openMs = Date.now() - began;
  const during = await redisClients();
  const rssMb = Math.round((process.memoryUsage().rss - rssBefore) / 1e6);
  stop.abort();
  await Promise.all(open);
  while ((app.hub?.listenerCount ?? 0) > 0) await new Promise((r) => setTimeout(r, 50));
  const after = await redisClients();
  const result = {
    watchers,
    sessions,
    openMs,
    redisClients: { before, during, after },
    rssGrowthMb: rssMb,
  };
  process.stdout.write(
    `${watchers} watchers over ${sessions} HTTP/2 connections opened in ${openMs} ms; ` +
      `Redis connections ${before} before, ${during} during, ${after} after; ` +
      `RSS +${rssMb} MB (callers and service in one process)\n${JSON.stringify(result)}\n`,
  );
} finally {
  await app.close();
  redis.disconnect();
  await redisServer.stop();
}
setTimeout(() => process.exit(0), 1000).unref();
