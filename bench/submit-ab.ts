/**
 * A/B of the submit path: API processes of different checkouts (and, if
 * asked, the baseline's) on ONE private redis-server, measured in turns
 * (closed loop, Connect JSON, 50 in flight), so a drift in the machine's load
 * falls on every variant alike. Per turn: req/s, p99, the API's CPU µs per
 * request (/proc) and redis-server's (INFO cpu: only the measured variant is
 * loaded during its window). Prints each variant's medians and the ratio of
 * each to the first.
 *
 *   npx tsx bench/submit-ab.ts --rounds 8 A=/tmp/ab-base B=. [baseline]
 *   npx tsx bench/submit-ab.ts A=. B=.@LOG_LEVEL=warn      # NAME=DIR@VAR=VALUE,...
 *   npx tsx bench/submit-ab.ts A=. baseline baseline@NODE_OPTIONS=--max-semi-space-size=64
 *
 * A checkout is a folder with this repository's sources and node_modules (a
 * `git archive` of another commit with node_modules linked in will do).
 * Options: --rounds N (8), --seconds S (3), --warmup S (1), --concurrency C
 * (50), --otel-off, --grpc (ours over gRPC instead of Connect JSON),
 * --getjob (GetJob of one queued job as a Connect GET instead of submits;
 * ours only), --commandstats (Redis's per command, of each variant's last round),
 * --cpu-prof DIR (a folder of profiles per variant).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { freePort, isListening } from "../src/queue/private-redis.js";
import { startRedisServer } from "../test/helpers/redis-server.js";
import type { SubmitProtocol } from "./load.js";
import { createLoadRunner } from "./load-runner.js";
import { processCpuUs, redisCpuUs } from "./proc-stats.js";

interface Variant {
  name: string;
  dir: string;
  baseline: boolean;
  /** Extra environment variables of its API process. */
  env: Record<string, string>;
  proc?: ChildProcess;
  baseUrl?: string;
  rows: { rps: number; p99: number; api: number; redis: number }[];
}

const argv = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const rounds = opt("rounds", 8);
const seconds = opt("seconds", 3);
const warmup = opt("warmup", 1);
const concurrency = opt("concurrency", 50);
const otelOff = argv.includes("--otel-off");
const grpc = argv.includes("--grpc");
const getJob = argv.includes("--getjob");
const commandStats = argv.includes("--commandstats");
const cpuProfAt = argv.indexOf("--cpu-prof");
const cpuProf = cpuProfAt >= 0 ? path.resolve(argv[cpuProfAt + 1] ?? "") : undefined;
const variants: Variant[] = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i] ?? "";
  if (a.startsWith("--")) {
    if (!["--otel-off", "--grpc", "--getjob", "--commandstats"].includes(a)) i++;
    continue;
  }
  const [spec = "", extra = ""] = a.split("@");
  const env: Record<string, string> = {};
  for (const kv of extra.split(",").filter((x) => x !== "")) {
    const eq = kv.indexOf("=");
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  if (spec === "baseline") {
    const name = extra === "" ? "baseline" : `baseline@${extra}`;
    variants.push({ name, dir: ".", baseline: true, env, rows: [] });
  } else {
    const [name = "", dir = ""] = spec.split("=");
    variants.push({ name, dir: path.resolve(dir), baseline: false, env, rows: [] });
  }
}
if (variants.length === 0) throw new Error("usage: submit-ab.ts NAME=DIR... [baseline]");
if (getJob && variants.some((v) => v.baseline)) throw new Error("--getjob: ours only");

/** Submits one job to a variant (Connect JSON) and answers its id: the GetJob target. */
async function submitTarget(baseUrl: string, key: string): Promise<string> {
  const res = await fetch(`${baseUrl}/reports.v1.ReportService/SubmitReport`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      idempotencyKey: key,
      userId: "ab-user",
      reportType: "REPORT_TYPE_WEEKLY",
      filters: { region: "eu" },
    }),
  });
  const body = (await res.json()) as { jobId?: string };
  if (!res.ok || body.jobId === undefined) throw new Error(`submit: ${res.status}`);
  return body.jobId;
}

const runDir = mkdtempSync(path.join(os.tmpdir(), "submit-ab-"));
const server = await startRedisServer();
const admin = new Redis(server.url);
const runner = createLoadRunner("process");
const targets = new Map<Variant, string>();
const inherited = ["PATH", "HOME", "TMPDIR", "LANG", "TZ"];
const baseEnv: Record<string, string> = {};
for (const k of inherited) if (process.env[k] !== undefined) baseEnv[k] = process.env[k] ?? "";

try {
  for (const [i, v] of variants.entries()) {
    const port = await freePort();
    const log = openSync(path.join(runDir, `${v.name}.log`), "a");
    const env = v.baseline
      ? { REDIS_URL: server.url, BULL_PREFIX: `naive${i}`, HOST: "127.0.0.1", PORT: String(port) }
      : {
          REDIS_URL: server.url,
          REDIS_PREFIX: `ab${i}`,
          HOST: "127.0.0.1",
          PORT: String(port),
          METRICS_PORT: "0",
          ARTIFACT_DIR: runDir,
          MAX_BACKLOG: "100000000",
          ...(otelOff ? { OTEL_SDK_DISABLED: "true" } : {}),
          ...v.env,
        };
    const args = v.baseline
      ? ["--import", "tsx", "bench/baselines/express-bullmq/main.ts", "api"]
      : ["--import", "tsx", "--import", "./src/telemetry/preload.ts", "src/main.ts", "api"];
    const prof =
      cpuProf === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", path.join(cpuProf, v.name)];
    v.proc = spawn(process.execPath, [...prof, ...args], {
      cwd: v.dir,
      env: { ...baseEnv, ...env },
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    v.baseUrl = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    while (!(await isListening("127.0.0.1", port, 200))) {
      if (v.proc.exitCode !== null || Date.now() > deadline)
        throw new Error(
          `${v.name} did not start:\n${readFileSync(path.join(runDir, `${v.name}.log`), "utf8")}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (getJob) {
    for (const v of variants)
      targets.set(v, await submitTarget(v.baseUrl ?? "", `${v.name}-target`));
  }
  for (let round = 0; round <= rounds; round++) {
    // Round 0 warms every variant up (JIT) and is not counted.
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      const pid = v.proc?.pid ?? 0;
      const protocol: SubmitProtocol = v.baseline
        ? "baseline-json"
        : grpc
          ? "grpc"
          : "connect-json";
      let api0 = 0;
      let redis0 = 0;
      const timer = setTimeout(
        async () => {
          api0 = processCpuUs(pid);
          redis0 = await redisCpuUs(admin);
          if (commandStats) await admin.config("RESETSTAT");
        },
        (round === 0 ? 3 : 1) * warmup * 1000,
      );
      const measure = {
        concurrency,
        durationMs: seconds * 1000,
        warmupMs: (round === 0 ? 3 : 1) * warmup * 1000,
      };
      const m = getJob
        ? await runner.run({
            kind: "get-job",
            protocol: "connect-get",
            baseUrl: v.baseUrl ?? "",
            jobId: targets.get(v) ?? "",
            ...measure,
          })
        : await runner.run({
            kind: "submit",
            protocol,
            baseUrl: v.baseUrl ?? "",
            keyPrefix: `${v.name}-${round}-${Date.now()}`,
            ...measure,
          });
      clearTimeout(timer);
      const api = (processCpuUs(pid) - api0) / m.requests;
      const redis = ((await redisCpuUs(admin)) - redis0) / m.requests;
      if (m.errors > 0) console.error(`${v.name}: ${m.errors} errors, first: ${m.firstError}`);
      if (round === 0) continue;
      if (commandStats && round === rounds) {
        const stats = (await admin.info("commandstats"))
          .split("\n")
          .filter((l) => l.startsWith("cmdstat_"))
          .map((l) => {
            const name = l.slice(8, l.indexOf(":"));
            const calls = Number(/calls=(\d+)/.exec(l)?.[1]);
            const usec = Number(/usec=(\d+)/.exec(l)?.[1]);
            return { name, perReq: calls / m.requests, usPerReq: usec / m.requests };
          })
          .filter((x) => x.perReq > 0.05)
          .sort((a, b) => b.usPerReq - a.usPerReq);
        console.error(`${v.name} commandstats per request (calls, µs):`);
        for (const x of stats)
          console.error(`  ${x.name.padEnd(20)} ${x.perReq.toFixed(2)}  ${x.usPerReq.toFixed(2)}`);
      }
      v.rows.push({ rps: m.rps, p99: m.p99Ms, api, redis });
      console.error(
        `round ${round} ${v.name}: ${m.rps.toFixed(0)} req/s, p99 ${m.p99Ms.toFixed(1)} ms, API ${api.toFixed(0)} µs/req, Redis ${redis.toFixed(0)} µs/req, load ${(m.cpuUs / m.requests).toFixed(0)} µs/req`,
      );
    }
  }
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  };
  const first = variants[0];
  const med = (v: Variant, k: "rps" | "p99" | "api" | "redis") => median(v.rows.map((r) => r[k]));
  console.log(
    `${getJob ? "GetJob A/B (Connect GET" : `submit A/B (${grpc ? "gRPC" : "Connect JSON"}`}, telemetry ${otelOff ? "off" : "on"}), ${rounds} rounds of ${seconds} s, medians; ratio to ${first?.name}; load ${os.loadavg()[0]?.toFixed(2)}`,
  );
  for (const v of variants) {
    const ratio = (k: "rps" | "p99" | "api" | "redis") =>
      first === undefined ? "" : ` (${(med(v, k) / med(first, k)).toFixed(2)}x)`;
    console.log(
      `  ${v.name.padEnd(10)} req/s ${med(v, "rps").toFixed(0)}${ratio("rps")}  p99 ${med(v, "p99").toFixed(1)} ms  API ${med(v, "api").toFixed(1)} µs/req${ratio("api")}  Redis ${med(v, "redis").toFixed(1)} µs/req${ratio("redis")}  API+Redis ${(med(v, "api") + med(v, "redis")).toFixed(0)}`,
    );
  }
} finally {
  for (const v of variants) v.proc?.kill("SIGTERM");
  await runner.close();
  admin.disconnect();
  await server.stop();
}
