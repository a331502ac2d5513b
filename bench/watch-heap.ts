/**
 * A profiling aid for WatchJob's memory: starts one API in this process (run
 * it as `node --expose-gc --import tsx --import ./src/telemetry/preload.ts
 * bench/watch-heap.ts`), opens WATCHERS watches from the load process over
 * WATCH_SESSIONS HTTP/2 connections, and prints the heap used per watcher
 * after full GCs. With HEAP_SNAPSHOTS=DIR it writes a heap snapshot before and
 * after opening them (compare the two in Chrome DevTools, or with
 * bench/heap-diff.ts).
 */
import path from "node:path";
import { writeHeapSnapshot } from "node:v8";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ReportType } from "../gen/reports/v1/job_pb.js";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config/config.js";
import { freePort } from "../src/queue/private-redis.js";
import { startRedisServer } from "../test/helpers/redis-server.js";
import { createLoadRunner } from "./load-runner.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");
const watchers = Number(process.env.WATCHERS ?? 2000);
const sessions = Number(process.env.WATCH_SESSIONS ?? 4);
const snapshots = process.env.HEAP_SNAPSHOTS;
const redisServer = await startRedisServer();
const port = await freePort();
const config = loadConfig(
  {
    REDIS_URL: redisServer.url,
    PORT: String(port),
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
    METRICS_PORT: "0",
    TENANT_MAX_WATCHES: String(watchers + 1),
  },
  "api",
);
const app = createApp(config);
await app.start();
const runner = createLoadRunner("process");
const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
try {
  const baseUrl = `http://127.0.0.1:${port}`;
  const client = createClient(
    ReportService,
    createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  );
  const jobIds: string[] = [];
  for (let i = 0; i < 20; i++) {
    const res = await client.submitReport({
      userId: `u${i}`,
      reportType: ReportType.WEEKLY,
      runAt: timestampFromMs(Date.now() + 3600_000),
    });
    jobIds.push(res.jobId);
  }
  // Warm up: open and close a few watches, so lazily built state is not counted.
  await runner.run({
    kind: "watch-open",
    protocol: "grpc-watch",
    baseUrl,
    jobIds,
    watchers: 100,
    sessions,
    timeoutMs: 60_000,
  });
  await runner.run({ kind: "watch-collect", timeoutMs: 1 });
  while ((app.hub?.listenerCount ?? 0) > 0) await new Promise((r) => setTimeout(r, 20));
  const h0 = heap();
  if (snapshots) writeHeapSnapshot(path.join(snapshots, "before.heapsnapshot"));
  const t0 = performance.now();
  const open = await runner.run({
    kind: "watch-open",
    protocol: "grpc-watch",
    baseUrl,
    jobIds,
    watchers,
    sessions,
    timeoutMs: 120_000,
  });
  const openMs = performance.now() - t0;
  const h1 = heap();
  if (snapshots) writeHeapSnapshot(path.join(snapshots, "after.heapsnapshot"));
  const kb = (h1 - h0) / 1024 / open.opened;
  process.stdout.write(
    `${open.opened} watchers open in ${Math.round(openMs)} ms (${open.errors} errors${open.firstError ? `: ${open.firstError}` : ""}); heap ${kb.toFixed(2)} KB/watcher after GC\n`,
  );
  await runner.run({ kind: "watch-collect", timeoutMs: 1 });
} finally {
  await runner.close();
  await app.close();
  await redisServer.stop();
}
setTimeout(() => process.exit(0), 1000).unref();
