/**
 * `npm run chaos`: the service under faults. Starts a redis-server with AOF,
 * API and worker processes of the real service, drives mixed load at them
 * while injecting faults at random, then (faults stopped, load settled)
 * checks the invariants, prints them as a table and exits 1 on any violation.
 *
 * Settings (environment): CHAOS_SECONDS (load and faults, default 120),
 * CHAOS_SEED (printed; replays the run's choices), CHAOS_FAULTS (comma list
 * of faults.ts kinds, default all; "none" for none), CHAOS_SETTLE_SECONDS
 * (default 90), CHAOS_RETENTION_SECONDS (the run's job retention, default 30),
 * CHAOS_APIS / CHAOS_WORKERS (default 2 / 2), CHAOS_USERS (default 4),
 * CHAOS_FAULT_GAP_MS ("min-max" between faults, default 1000-4000),
 * CHAOS_FAULT_LOOPS (faults injected at once, default 1),
 * CHAOS_APPENDFSYNC (always | everysec, default always), CHAOS_KEEP=1 (keep
 * the run's folder: logs, AOF, reports; kept anyway when a check fails).
 * WORKER_LOCK_DURATION_MS, WORKER_LOCK_RENEW_MS, WORKER_STALLED_INTERVAL_MS,
 * SUBMIT_WAITAOF, REPORT_FAIL_RATE and REPORT_PHASE_DELAY_MS pass through.
 */
import { randomBytes } from "node:crypto";
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { deploymentArtifactDir, parseReportName } from "../../src/domain/artifact-paths.js";
import type { JobEventView } from "../../src/domain/job.js";
import { terminalStates } from "../../src/domain/job.js";
import { freePort } from "../../src/queue/private-redis.js";
import { type FaultKind, faultKinds, injectFaults } from "./faults.js";
import { createInspector } from "./inspect.js";
import { evaluate, type FinalState, formatTable } from "./invariants.js";
import { createLoad } from "./load.js";
import { createRedisProcess, createServiceProcess, type UnexpectedExit } from "./processes.js";
import { createRng } from "./rng.js";

interface Options {
  seconds: number;
  seed: number;
  faults: FaultKind[];
  settleSeconds: number;
  retentionSeconds: number;
  apis: number;
  workers: number;
  users: number;
  gapMs: [number, number];
  faultLoops: number;
  appendfsync: "always" | "everysec";
  keep: boolean;
}

function readOptions(env: NodeJS.ProcessEnv): Options {
  const problems: string[] = [];
  const int = (name: string, def: number, min: number, max: number) => {
    const raw = env[name]?.trim();
    if (raw === undefined || raw === "") return def;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`${name}: an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`);
      return def;
    }
    return n;
  };
  const rawFaults = env.CHAOS_FAULTS?.trim() || faultKinds.join(",");
  const faults = rawFaults === "none" ? [] : rawFaults.split(",").map((s) => s.trim());
  for (const f of faults)
    if (!(faultKinds as readonly string[]).includes(f))
      problems.push(
        `CHAOS_FAULTS: unknown fault ${JSON.stringify(f)} (known: ${faultKinds.join(", ")}, none)`,
      );
  const gap = (env.CHAOS_FAULT_GAP_MS?.trim() || "1000-4000").split("-").map(Number);
  if (
    gap.length !== 2 ||
    gap.some((n) => !Number.isSafeInteger(n) || n < 0) ||
    (gap[0] ?? 0) > (gap[1] ?? 0)
  )
    problems.push(
      `CHAOS_FAULT_GAP_MS: "min-max" in ms (got ${JSON.stringify(env.CHAOS_FAULT_GAP_MS)})`,
    );
  const appendfsync = env.CHAOS_APPENDFSYNC?.trim() || "always";
  if (appendfsync !== "always" && appendfsync !== "everysec")
    problems.push(`CHAOS_APPENDFSYNC: always or everysec (got ${JSON.stringify(appendfsync)})`);
  const options: Options = {
    seconds: int("CHAOS_SECONDS", 120, 1, 24 * 3600),
    seed: int("CHAOS_SEED", randomBytes(4).readUInt32BE(0), 0, 2 ** 32 - 1),
    faults: faults as FaultKind[],
    settleSeconds: int("CHAOS_SETTLE_SECONDS", 90, 5, 3600),
    retentionSeconds: int("CHAOS_RETENTION_SECONDS", 30, 1, 3600),
    apis: int("CHAOS_APIS", 2, 1, 8),
    workers: int("CHAOS_WORKERS", 2, 1, 8),
    users: int("CHAOS_USERS", 4, 1, 64),
    gapMs: [gap[0] ?? 1000, gap[1] ?? 4000],
    faultLoops: int("CHAOS_FAULT_LOOPS", 1, 1, 8),
    appendfsync: appendfsync as "always" | "everysec",
    keep: /^(1|true|yes)$/i.test(env.CHAOS_KEEP ?? ""),
  };
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`chaos: ${p}\n`);
    process.exit(2);
  }
  return options;
}

async function main(): Promise<number> {
  const o = readOptions(process.env);
  const dir = mkdtempSync(path.join(tmpdir(), "report-jobs-chaos-"));
  const started = Date.now();
  const log = (line: string) => {
    const text = `[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}`;
    process.stdout.write(`${text}\n`);
    appendFileSync(path.join(dir, "chaos.log"), `${text}\n`);
  };
  log(
    `chaos: CHAOS_SEED=${o.seed} CHAOS_SECONDS=${o.seconds} CHAOS_FAULTS=${o.faults.join(",") || "none"} ` +
      `(${o.apis} API, ${o.workers} worker processes, appendfsync ${o.appendfsync}, retention ${o.retentionSeconds} s); folder ${dir}`,
  );

  const unexpectedExits: UnexpectedExit[] = [];
  const processes: {
    start(): Promise<void>;
    kill(s: "SIGKILL"): Promise<void>;
    thaw(): void;
    up: boolean;
    name: string;
  }[] = [];
  const onUnexpectedExit = (e: UnexpectedExit) => {
    unexpectedExits.push(e);
    log(`UNEXPECTED exit of ${e.name} (code ${e.code}, signal ${e.signal}); starting it again`);
    const p = processes.find((x) => x.name === e.name);
    // Redis is not restarted here: its own crash would be a finding of a different kind.
    if (p !== undefined && e.name !== "redis") void p.start().catch(() => undefined);
  };
  const redis = createRedisProcess({
    port: await freePort(),
    dir: path.join(dir, "redis"),
    appendfsync: o.appendfsync,
    onUnexpectedExit,
  });
  processes.push(redis);
  const prefix = "chaos";
  const artifactDir = path.join(dir, "artifacts");
  const retention = String(o.retentionSeconds);
  const passThrough = [
    "WORKER_LOCK_DURATION_MS",
    "WORKER_LOCK_RENEW_MS",
    "WORKER_STALLED_INTERVAL_MS",
    "SUBMIT_WAITAOF",
    "REPORT_FAIL_RATE",
    "REPORT_PHASE_DELAY_MS",
  ];
  const baseEnv: Record<string, string> = {
    ...Object.fromEntries(
      ["PATH", "HOME", "TMPDIR", "LANG", "TZ"].flatMap((k) =>
        process.env[k] === undefined ? [] : [[k, process.env[k] as string]],
      ),
    ),
    REDIS_URL: redis.url,
    REDIS_PREFIX: prefix,
    REQUIRE_AOF: "true",
    HOST: "127.0.0.1",
    METRICS_PORT: "0",
    ARTIFACT_DIR: artifactDir,
    // Shared by the APIs, so a link one signed downloads from the other.
    DOWNLOAD_URL_SECRET: randomBytes(24).toString("hex"),
    LOG_LEVEL: "info",
    REPORT_PHASE_DELAY_MS: "250",
    REPORT_FAIL_RATE: "0.08",
    JOB_ATTEMPTS: "2",
    RETRY_BACKOFF_MS: "300",
    WORKER_CONCURRENCY: "4",
    RETENTION_SUCCEEDED_SECONDS: retention,
    RETENTION_FAILED_SECONDS: retention,
    IDEMPOTENCY_TTL_SECONDS: retention,
    RETENTION_SWEEP_MS: "2000",
    RECONCILE_INTERVAL_MS: "5000",
    WATCH_KEEPALIVE_MS: "1000",
    SHUTDOWN_GRACE_MS: "2000",
    ...Object.fromEntries(
      passThrough.flatMap((k) =>
        process.env[k] === undefined ? [] : [[k, process.env[k] as string]],
      ),
    ),
  };
  const apis = await Promise.all(
    Array.from({ length: o.apis }, async (_, i) =>
      createServiceProcess({
        name: `api-${i + 1}`,
        mode: "api",
        env: { ...baseEnv, PORT: String(await freePort()) },
        logFile: path.join(dir, `api-${i + 1}.log`),
        onUnexpectedExit,
      }),
    ),
  );
  const workers = Array.from({ length: o.workers }, (_, i) =>
    createServiceProcess({
      name: `worker-${i + 1}`,
      mode: "worker",
      env: baseEnv,
      logFile: path.join(dir, `worker-${i + 1}.log`),
      onUnexpectedExit,
    }),
  );
  processes.push(...apis, ...workers);
  const inspector = createInspector(redis.url, prefix);
  let failed = true;
  try {
    await redis.start();
    await Promise.all([...apis, ...workers].map((p) => p.start()));
    log("all processes ready");

    const rng = createRng(o.seed);
    const faultRng = rng.fork();
    const load = createLoad({
      apiUrls: apis.map((a) => a.url),
      rng: rng.fork(),
      inspector,
      users: o.users,
      retentionMs: o.retentionSeconds * 1000,
      log,
    });
    const serverKeys = new Map<string, Set<string>>();
    const snapshot = async () => {
      for (const r of await inspector.records()) {
        if (r.idemKey === undefined) continue;
        const ids = serverKeys.get(r.idemKey) ?? new Set<string>();
        serverKeys.set(r.idemKey, ids);
        ids.add(r.id);
      }
    };
    const runEnd = Date.now() + o.seconds * 1000;
    let snapshots = true;
    const snapshotter = (async () => {
      while (snapshots) {
        await snapshot().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 3000));
      }
    })();
    const faultLoops = Array.from({ length: o.faultLoops }, () => faultRng.fork()).map((r) =>
      injectFaults({
        rng: r,
        kinds: o.faults,
        untilMs: runEnd,
        gapMs: o.gapMs,
        redis,
        apis,
        workers,
        log,
      }),
    );
    const [counts] = await Promise.all([Promise.all(faultLoops), load.run(runEnd)]);
    const faults = new Map<string, number>();
    for (const c of counts) for (const [k, n] of c) faults.set(k, (faults.get(k) ?? 0) + n);
    log(
      `load and faults stopped (${[...faults].map(([k, n]) => `${k} ${n}`).join(", ") || "no faults"}); settling`,
    );
    for (const p of processes) p.thaw();
    await redis.start();
    await Promise.all([...apis, ...workers].map((p) => p.start()));
    const settled = await load.settle(Date.now() + o.settleSeconds * 1000);
    snapshots = false;
    await snapshotter;
    await snapshot();
    log(
      settled
        ? "settled: every job followed to its end"
        : "settle deadline passed with jobs still followed",
    );

    const { results } = load;
    const logs = new Map<string, JobEventView[]>();
    const live = new Map<string, string | undefined>();
    const expired = new Set<string>();
    let lastEnd = 0;
    for (const job of results.jobs.values()) {
      const stored = await inspector.job(job.id);
      const record = stored.record;
      logs.set(job.id, record === undefined ? job.events : stored.events);
      if (record === undefined) expired.add(job.id);
      if (record !== undefined && !terminalStates.has(record.state)) {
        live.set(job.id, await inspector.bullHolds(record));
      } else if (record !== undefined && job.checkedGeneration < job.generation) {
        // Ended after the follower gave up: still counts as unchecked.
        job.problems.push("lost:ended but its end was not checked before the settle deadline");
      }
      lastEnd = Math.max(lastEnd, record?.finishedAt ?? job.finishedAt ?? 0);
    }

    // Retention: everything of the ended jobs expires, the janitor sweeps the rest.
    const ids = new Set(results.jobs.keys());
    for (const set of serverKeys.values()) for (const id of set) ids.add(id);
    const live0 = new Set(live.keys());
    const gone = new Set([...ids].filter((id) => !live0.has(id)));
    const retentionDeadline = Math.max(Date.now(), lastEnd + o.retentionSeconds * 1000) + 30_000;
    log(`waiting for retention (${o.retentionSeconds} s past the last end) to empty Redis`);
    let redisLeftovers: string[] = [];
    let fileLeftovers: string[] = [];
    const reportsDir = deploymentArtifactDir(artifactDir, prefix);
    while (Date.now() < lastEnd + o.retentionSeconds * 1000)
      await new Promise((r) => setTimeout(r, 500));
    for (;;) {
      redisLeftovers = await inspector.leftovers(gone, live0);
      fileLeftovers = existsSync(reportsDir)
        ? // A job's folder (earlier layouts) or a report file of its own (`<job>@<tag>`);
          // reports in segments go with their segment, by age (report-segments.test.ts).
          readdirSync(reportsDir).filter((n) => gone.has(parseReportName(n)?.jobId ?? n))
        : [];
      if (
        (redisLeftovers.length === 0 && fileLeftovers.length === 0) ||
        Date.now() > retentionDeadline
      )
        break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const unexpectedErrors: string[] = [];
    for (const name of readdirSync(dir).filter((n) => /^(api|worker)-\d+\.log$/.test(n))) {
      for (const line of readFileSync(path.join(dir, name), "utf8").split("\n")) {
        if (!line.includes('"unexpected error"')) continue;
        try {
          const l = JSON.parse(line) as { time?: string; err?: { message?: string } };
          unexpectedErrors.push(`${name.slice(0, -4)} ${l.time ?? ""}: ${l.err?.message ?? line}`);
        } catch {
          unexpectedErrors.push(`${name.slice(0, -4)}: ${line.slice(0, 300)}`);
        }
      }
    }
    const final: FinalState = {
      unexpectedErrors,
      logs,
      expired,
      live,
      serverKeys,
      unexpectedExits,
      redisLeftovers,
      fileLeftovers: fileLeftovers.map((n) => path.join(reportsDir, n)),
      retentionWaitS: Math.max(0, Math.round((Date.now() - lastEnd) / 1000)),
    };
    const rows = evaluate(results, final);
    const calls = [...results.calls]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `${k}: ${n}`);
    log(`calls: ${calls.join(", ")}`);
    log(`faults: ${[...faults].map(([k, n]) => `${k} ${n}`).join(", ") || "none"}`);
    const table = formatTable(rows);
    process.stdout.write(
      `\nchaos invariants (CHAOS_SEED=${o.seed}, ${o.seconds} s of faults):\n${table}\n\n`,
    );
    writeFileSync(
      path.join(dir, "summary.json"),
      `${JSON.stringify({ seed: o.seed, seconds: o.seconds, faults: Object.fromEntries(faults), rows }, null, 2)}\n`,
    );
    failed = rows.some((r) => r.violations > 0);
    process.stdout.write(
      failed
        ? `chaos: FAILED; replay with CHAOS_SEED=${o.seed}; logs in ${dir}\n`
        : `chaos: all invariants hold (CHAOS_SEED=${o.seed})\n`,
    );
    return failed ? 1 : 0;
  } finally {
    await inspector.close();
    for (const p of processes) p.thaw();
    await Promise.all([...apis, ...workers, redis].map((p) => p.kill("SIGKILL")));
    if (!failed && !o.keep) rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `chaos: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
