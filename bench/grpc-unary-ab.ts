/**
 * An A/B of gRPC SubmitReport on the raw HTTP/2 route (api/grpc-unary-route.ts)
 * against connect's handler, in one process on this shared, noisy machine:
 * one API (mode api, no OpenTelemetry SDK, request log lines at info into a
 * sink) and a gRPC caller (bench/lean-clients.ts, one HTTP/2 connection, 50
 * calls in flight) take turns of ROUND_MS on each path, ROUNDS times, and the
 * process's CPU per call is printed for each turn and as medians. Connect's
 * path is taken with `grpc-encoding: gzip` on an uncompressed message, which
 * the route leaves to connect and which changes nothing in connect's answer
 * (grpc-unary-route.test.ts); the caller's cost is the same on both, so the
 * difference is the server's.
 *
 *   npx tsx bench/grpc-unary-ab.ts        (ROUNDS=4 ROUND_MS=2000 by default)
 */
import { Writable } from "node:stream";
import { createApp } from "../src/app.js";
import { loadConfig } from "../src/config/config.js";
import { createLogger } from "../src/telemetry/logger.js";
import { startRedisServer } from "../test/helpers/redis-server.js";
import { grpcSubmit } from "./lean-clients.js";
import { benchFilters } from "./load.js";
import { measure } from "./measure.js";

const rounds = Number(process.env.ROUNDS ?? 4);
const roundMs = Number(process.env.ROUND_MS ?? 2000);

const redis = await startRedisServer();
const config = loadConfig(
  { REDIS_URL: redis.url, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", METRICS_PORT: "0" },
  "api",
);
const sink = new Writable({
  write(_chunk, _encoding, done) {
    done();
  },
});
const app = createApp(config, {
  logger: createLogger(config.telemetry.logLevel, {}, { destination: sink }),
});
try {
  const { url } = await app.start();
  if (url === undefined) throw new Error("the API did not start");
  const paths = {
    route: grpcSubmit(url, benchFilters),
    connect: grpcSubmit(url, benchFilters, { "grpc-encoding": "gzip" }),
  };
  const cpu: Record<keyof typeof paths, number[]> = { route: [], connect: [] };
  let n = 0;
  for (let round = 0; round <= rounds; round++) {
    for (const name of ["route", "connect"] as const) {
      const m = await measure((seq) => paths[name].call(`ab-${n}-${seq}`), {
        concurrency: 50,
        durationMs: roundMs,
        warmupMs: round === 0 ? 1000 : 200,
      });
      n++;
      // Round 0 warms both paths up.
      if (round > 0) cpu[name].push(Math.round(m.cpuUs / m.requests));
    }
  }
  for (const c of Object.values(paths)) c.close();
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(
    JSON.stringify({
      cpuUsPerCall: cpu,
      median: { route: median(cpu.route), connect: median(cpu.connect) },
    }),
  );
} finally {
  await app.close();
  await redis.stop();
}
