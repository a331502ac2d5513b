/**
 * A/B of the submitter alone (no HTTP): each checkout's createSubmitter, on
 * one private redis-server (a prefix each), submitting in turns with 50 calls
 * in flight, a fresh idempotency key per call. Per turn: this process's CPU
 * µs per submit (the submitter's JS and ioredis) and redis-server's (INFO
 * cpu). Prints medians and ratios to the first checkout.
 *
 *   npx tsx bench/submitter-ab.ts --rounds 10 --count 20000 A=/tmp/ab-base B=.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { pino } from "pino";
import { startRedisServer } from "../test/helpers/redis-server.js";
import { redisCpuUs } from "./proc-stats.js";

const argv = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const rounds = opt("rounds", 10);
const count = opt("count", 20000);
const inFlight = opt("concurrency", 50);
const checkouts = argv
  .filter((a, i) => !a.startsWith("--") && !argv[i - 1]?.startsWith("--"))
  .map((a) => {
    const [name = "", dir = ""] = a.split("=");
    return { name, dir: path.resolve(dir) };
  });

const server = await startRedisServer();
const logger = pino({ level: "silent" });
type Submit = (key: string) => Promise<unknown>;
const variants: { name: string; submit: Submit; client: number[]; redis: number[] }[] = [];
let admin: { info(section: string): Promise<string> } | undefined;
try {
  for (const [i, c] of checkouts.entries()) {
    const at = (p: string) => pathToFileURL(path.join(c.dir, p)).href;
    const { loadConfig } = await import(at("src/config/config.ts"));
    const { createRedisConnection, waitForReady } = await import(at("src/queue/connections.ts"));
    const { createKeys } = await import(at("src/queue/keys.ts"));
    const { createReportQueues } = await import(at("src/queue/report-queues.ts"));
    const { createSubmitter } = await import(at("src/queue/submitter.ts"));
    const config = loadConfig({ REDIS_URL: server.url, MAX_BACKLOG: "100000000" });
    const redis = createRedisConnection(server.url, "command", logger);
    await waitForReady(redis, 5000);
    admin ??= redis;
    const keys = createKeys(`ab${i}`);
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
    variants.push({
      name: c.name,
      client: [],
      redis: [],
      submit: (key) =>
        submitter.submit({
          tenant: "bench",
          userId: "user-1",
          reportType: "weekly",
          filters: { region: "eu", format: "csv" },
          priority: "normal",
          idempotencyKey: key,
        }),
    });
  }
  const turn = async (v: (typeof variants)[number], round: number) => {
    let next = 0;
    const loop = async () => {
      while (next < count) {
        const seq = next++;
        await v.submit(`${v.name}-${round}-${seq}`);
      }
    };
    const r0 = await redisCpuUs(admin as never);
    const c0 = process.cpuUsage();
    await Promise.all(Array.from({ length: inFlight }, loop));
    const c = process.cpuUsage(c0);
    const r = (await redisCpuUs(admin as never)) - r0;
    return { client: (c.user + c.system) / count, redis: r / count };
  };
  for (let round = 0; round <= rounds; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      const m = await turn(v, round);
      if (round === 0) continue;
      v.client.push(m.client);
      v.redis.push(m.redis);
      console.error(
        `round ${round} ${v.name}: client ${m.client.toFixed(1)} µs, Redis ${m.redis.toFixed(1)} µs per submit`,
      );
    }
  }
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  };
  const first = variants[0];
  console.log(
    `submitter A/B, ${rounds} rounds of ${count} submits, medians, ratio to ${first?.name}`,
  );
  for (const v of variants) {
    const c = median(v.client);
    const r = median(v.redis);
    console.log(
      `  ${v.name.padEnd(10)} client ${c.toFixed(1)} µs (${(c / median(first?.client ?? [])).toFixed(2)}x)  Redis ${r.toFixed(1)} µs (${(r / median(first?.redis ?? [])).toFixed(2)}x)`,
    );
  }
} finally {
  await server.stop();
  process.exit(0);
}
