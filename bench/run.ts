/**
 * `npm run bench`: runs the report-jobs benchmark once and prints a table and
 * one JSON line with every figure. Environment: BENCH_SECONDS (measured
 * seconds per measurement, default 5), BENCH_WARMUP_SECONDS (default 1),
 * BENCH_CONCURRENCY (default 64), BENCH_BACKLOG (waiting jobs for the second
 * GetJob measurement, default 20000), BENCH_CALLERS ("process", the default:
 * callers in a process of their own; or "inline": on the service's event
 * loop). Exits 1 when any call failed.
 */
import {
  type BenchOptions,
  defaultBenchOptions,
  formatJson,
  formatTable,
  runReportBenchmark,
} from "./report-bench.js";

function readOptions(env: NodeJS.ProcessEnv): BenchOptions {
  const problems: string[] = [];
  const num = (name: string, def: number, min: number, integer: boolean): number => {
    const raw = env[name]?.trim();
    if (raw === undefined || raw === "") return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      problems.push(
        `${name}: must be ${integer ? "an integer" : "a number"} >= ${min} (got ${JSON.stringify(raw)})`,
      );
      return def;
    }
    return n;
  };
  const options: BenchOptions = {
    seconds: num("BENCH_SECONDS", defaultBenchOptions.seconds, 0.1, false),
    warmupSeconds: num("BENCH_WARMUP_SECONDS", defaultBenchOptions.warmupSeconds, 0, false),
    concurrency: num("BENCH_CONCURRENCY", defaultBenchOptions.concurrency, 1, true),
    backlog: num("BENCH_BACKLOG", defaultBenchOptions.backlog, 0, true),
    callers: defaultBenchOptions.callers,
  };
  const callers = env.BENCH_CALLERS?.trim();
  if (callers === "process" || callers === "inline") options.callers = callers;
  else if (callers !== undefined && callers !== "") {
    problems.push(`BENCH_CALLERS: must be process or inline (got ${JSON.stringify(callers)})`);
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`bench: ${p}\n`);
    process.exit(2);
  }
  return options;
}

const options = readOptions(process.env);
try {
  const results = await runReportBenchmark(options, (line) =>
    process.stderr.write(`bench: ${line}\n`),
  );
  process.stdout.write(`${formatTable(results)}\n${formatJson(results)}\n`);
  const failed = [
    results.submit.connectJson,
    results.submit.grpc,
    results.submit.rawQueueAdd,
    results.getJob.emptyQueue,
    results.getJob.behindBacklog,
  ].filter((m) => m.errors > 0);
  for (const m of failed)
    process.stderr.write(`bench: ${m.errors} calls failed, first: ${m.firstError}\n`);
  process.exitCode = failed.length > 0 ? 1 : 0;
} catch (err) {
  process.stderr.write(`bench: failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
// Client keep-alive sockets and timers must not hold a finished run open.
setTimeout(() => process.exit(), 2000).unref();
