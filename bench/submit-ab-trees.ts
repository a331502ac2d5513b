/**
 * An A/B of the submit path across source trees, side by side: each variant
 * names the tree its API process runs from (`npm start`'s command, telemetry
 * on unless `otel: false`, its own redis-server) and the tree its load
 * process runs from (bench/load-process.ts), and a protocol. Variants
 * sharing an API tree (and telemetry) share one API; the same for load
 * trees. Rounds take turns (the order reverses every round) after one
 * warm-up round, and each variant's API CPU per request (/proc), load
 * process CPU per request and req/s are printed per round and as medians.
 * Old code comes from a tree of its own, e.g. `git worktree add /tmp/base main`
 * (with node_modules linked or installed there).
 *
 *   VARIANTS='[{"name":"old","api":"/tmp/base","load":"/tmp/base","protocol":"grpc"},
 *              {"name":"new","api":".","load":".","protocol":"grpc"}]' npx tsx bench/submit-ab-trees.ts
 *   (ROUNDS=5 DURATION_MS=4000 WARMUP_MS=1000 by default)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, openSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "../src/queue/private-redis.js";
import { startRedisServer } from "../test/helpers/redis-server.js";
import type { SubmitProtocol, SubmitTask } from "./load.js";
import type { LoadReply } from "./load-process.js";
import type { Measurement } from "./measure.js";
import { processCpuUs } from "./proc-stats.js";

interface Variant {
  name: string;
  api: string;
  load: string;
  protocol: SubmitProtocol;
  otel?: boolean;
}

const variants = JSON.parse(process.env.VARIANTS ?? "[]") as Variant[];
if (variants.length === 0) throw new Error("VARIANTS: a JSON list of {name, api, load, protocol}");
const rounds = Number(process.env.ROUNDS ?? 5);
const durationMs = Number(process.env.DURATION_MS ?? 4000);
const warmupMs = Number(process.env.WARMUP_MS ?? 1000);
const logDir = mkdtempSync(path.join(tmpdir(), "submit-ab-"));

type Redis = Awaited<ReturnType<typeof startRedisServer>>;
interface Api {
  pid: number;
  url: string;
  child: ChildProcess;
  redis: Redis;
  artifacts: string;
}

async function startApi(tree: string, otel: boolean, n: number): Promise<Api> {
  const redis = await startRedisServer();
  const port = await freePort();
  const artifacts = mkdtempSync(path.join(tmpdir(), "submit-ab-artifacts-"));
  const log = openSync(path.join(logDir, `api-${n}.log`), "a");
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--import", "./src/telemetry/preload.ts", "src/main.ts", "api"],
    {
      cwd: path.resolve(tree),
      stdio: ["ignore", log, log],
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "",
        REDIS_URL: redis.url,
        REDIS_PREFIX: "bench",
        HOST: "127.0.0.1",
        PORT: String(port),
        METRICS_PORT: "0",
        ARTIFACT_DIR: artifacts,
        MAX_BACKLOG: "100000000",
        ...(otel ? {} : { OTEL_SDK_DISABLED: "true" }),
      },
    },
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const up = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline)
      throw new Error(`the API in ${tree} did not start (logs: ${logDir})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { pid: child.pid as number, url, child, redis, artifacts };
}

function run(load: ChildProcess, task: SubmitTask): Promise<Measurement> {
  return new Promise((resolve, reject) => {
    load.once("message", (m: LoadReply) =>
      m.ok ? resolve(m.result as Measurement) : reject(new Error(m.error)),
    );
    load.send(task);
  });
}

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

const apis = new Map<string, Api>();
const loads = new Map<string, ChildProcess>();
const apiKey = (v: Variant) => `${path.resolve(v.api)}|${v.otel !== false}`;
const figures = new Map(
  variants.map((v) => [v.name, { api: [] as number[], load: [] as number[], rps: [] as number[] }]),
);
try {
  for (const v of variants) {
    if (!apis.has(apiKey(v)))
      apis.set(apiKey(v), await startApi(v.api, v.otel !== false, apis.size));
    if (!loads.has(path.resolve(v.load))) {
      loads.set(
        path.resolve(v.load),
        spawn(process.execPath, ["--import", "tsx", "bench/load-process.ts"], {
          cwd: path.resolve(v.load),
          stdio: ["ignore", "inherit", "inherit", "ipc"],
        }),
      );
    }
  }
  let n = 0;
  for (let round = 0; round <= rounds; round++) {
    for (const v of round % 2 === 0 ? variants : [...variants].reverse()) {
      const api = apis.get(apiKey(v)) as Api;
      const warmup = round === 0 ? warmupMs * 3 : warmupMs;
      let cpuStart = 0;
      const timer = setTimeout(() => {
        cpuStart = processCpuUs(api.pid);
      }, warmup);
      const m = await run(loads.get(path.resolve(v.load)) as ChildProcess, {
        kind: "submit",
        protocol: v.protocol,
        baseUrl: api.url,
        keyPrefix: `ab${n++}-${Date.now()}`,
        concurrency: 50,
        durationMs,
        warmupMs: warmup,
      });
      const cpuEnd = processCpuUs(api.pid);
      clearTimeout(timer);
      if (m.errors > 0)
        console.error(`${v.name}: ${m.errors} failed calls, first: ${m.firstError}`);
      // Round 0 warms every variant up.
      if (round === 0 || m.requests === 0) continue;
      const f = figures.get(v.name) as { api: number[]; load: number[]; rps: number[] };
      f.api.push((cpuEnd - cpuStart) / m.requests);
      f.load.push(m.cpuUs / m.requests);
      f.rps.push(m.rps);
      console.error(
        `round ${round} ${v.name}: API ${Math.round((cpuEnd - cpuStart) / m.requests)} µs/req, load ${Math.round(m.cpuUs / m.requests)} µs/req, ${Math.round(m.rps)} req/s`,
      );
    }
  }
} finally {
  for (const l of loads.values()) l.kill();
  for (const a of apis.values()) a.child.kill("SIGTERM");
  await Promise.all(
    [...apis.values()].map(
      (a) =>
        new Promise<void>((resolve) => {
          if (a.child.exitCode !== null) resolve();
          else a.child.once("exit", () => resolve());
        }),
    ),
  );
  for (const a of apis.values()) {
    await a.redis.stop();
    rmSync(a.artifacts, { recursive: true, force: true });
  }
}
console.log(
  `medians of ${rounds} rounds of ${durationMs} ms, load average now ${loadavg()
    .map((x) => x.toFixed(1))
    .join(" ")}`,
);
for (const [name, f] of figures) {
  console.log(
    `${name}: API ${Math.round(median(f.api))} µs/req, load ${Math.round(median(f.load))} µs/req, ${Math.round(median(f.rps))} req/s (API by round: ${f.api.map(Math.round).join(", ")})`,
  );
}
