/**
 * The options of `npm run bench:compare`, from its command line. `--quick`
 * picks short settings for CI; any option given explicitly wins over it.
 */
import { parseArgs } from "node:util";
import type { DesignId } from "./designs.js";

/** The scenarios, in the order they run within a round. */
export const scenarios = ["submit", "getjob", "drain", "latency", "watchers"] as const;
/** One scenario. */
export type Scenario = (typeof scenarios)[number];

/** Everything a compare run is told. */
export interface CompareOptions {
  rounds: number;
  only: Scenario[];
  designs: DesignId[];
  /** Measured seconds of each closed-loop measurement (submit, GetJob). */
  seconds: number;
  /** Warm-up seconds before each of them (the first GetJob gets three times this). */
  warmupSeconds: number;
  /** Calls in flight for submit and GetJob. */
  concurrency: number;
  /** Waiting jobs in front of the second GetJob measurement. */
  backlog: number;
  /** Jobs queued (queue paused) and then drained. */
  drainJobs: number;
  /** Worker concurrencies to drain at. */
  drainConcurrency: number[];
  /** Steady submit rate of the enqueue-to-complete measurement, jobs/s. */
  rate: number;
  latencyWarmupSeconds: number;
  latencySeconds: number;
  /** Worker concurrency of the enqueue-to-complete scenario. */
  workerConcurrency: number;
  watchers: number;
  /** Jobs the watchers spread over. */
  watchJobs: number;
  /** HTTP/2 connections our watchers share. */
  watchSessions: number;
  /** REPORT_PHASE_DELAY_MS of the watchers' worker, so events arrive spread out. */
  watchPhaseDelayMs: number;
  /**
   * Worker concurrency while the watchers look on: 1 runs the watched jobs one
   * after the other, so each event fans out alone (a latency, not a burst, figure).
   */
  watchConcurrency: number;
  /**
   * Telemetry of our API and worker in the work setup (drain, latency,
   * watchers): as shipped (true) or OTEL_SDK_DISABLED=true, to measure what
   * telemetry costs the worker.
   */
  workTelemetry: boolean;
  /** Run the service processes under `node --cpu-prof`, profiles written here. */
  cpuProfDir?: string;
  /**
   * Preload bench/heap-sampling.ts into the worker processes: a sampling heap
   * profile, garbage included, `<name>-<pid>.heapprofile` here at exit.
   */
  heapSamplingDir?: string;
  /** Keep the service processes' output here (default: a temporary folder, removed). */
  logDir?: string;
  quick: boolean;
}

/** The defaults: the full comparison, about 15-20 minutes on 2 cores. */
export const fullOptions: CompareOptions = {
  rounds: 3,
  only: [...scenarios],
  designs: ["baseline", "ours"],
  seconds: 5,
  // A service is measured warm: ours JIT-compiles about twice the baseline's
  // functions, and after 1 s it was still getting faster (docs/performance.md).
  warmupSeconds: 5,
  concurrency: 50,
  backlog: 20_000,
  drainJobs: 5000,
  drainConcurrency: [10, 50],
  rate: 200,
  latencyWarmupSeconds: 10,
  latencySeconds: 20,
  workerConcurrency: 10,
  watchers: 2000,
  watchJobs: 20,
  watchSessions: 4,
  watchPhaseDelayMs: 50,
  watchConcurrency: 1,
  workTelemetry: true,
  quick: false,
};

/**
 * `--quick`: one short round of everything, for CI: about 80 s on an idle
 * 2-core machine, most of it starting the 11 service processes.
 */
export const quickOptions: CompareOptions = {
  ...fullOptions,
  rounds: 1,
  seconds: 1,
  warmupSeconds: 0.5,
  backlog: 5000,
  drainJobs: 500,
  latencyWarmupSeconds: 2,
  latencySeconds: 3,
  watchers: 500,
  quick: true,
};

export const usage = `usage: npm run bench:compare -- [options]

Runs this service and the naive Express + BullMQ baseline side by side, each on
a fresh private redis-server, interleaved per round, and prints medians and
ratios (ours / baseline), then one JSON line with every figure.

  --quick                    one short round (CI); other options override it
  --rounds N                 rounds (default 3)
  --only LIST                scenarios: ${scenarios.join(",")}
  --designs LIST             ours,baseline (default both)
  --seconds S                measured seconds per submit/GetJob measurement (5)
  --warmup S                 warm-up seconds before each (5; the first on a fresh API 3x)
  --concurrency N            calls in flight for submit/GetJob (50)
  --backlog N                waiting jobs in front of GetJob (20000)
  --drain-jobs N             jobs to drain (5000)
  --drain-concurrency LIST   worker concurrencies to drain at (10,50)
  --rate N                   steady submits/s for enqueue-to-complete (200)
  --latency-warmup S         warm-up at that rate (10)
  --latency-seconds S        measured seconds at that rate (20)
  --worker-concurrency N     worker concurrency for enqueue-to-complete (10)
  --watchers N               concurrent watchers (2000; the 10,000 goal: --designs ours
                             --watchers 10000, the baseline needs a Redis connection each)
  --watch-jobs N             jobs they watch (20)
  --watch-sessions N         HTTP/2 connections our watchers share (4)
  --watch-phase-delay MS     the watched jobs' REPORT_PHASE_DELAY_MS (50)
  --watch-concurrency N      worker concurrency while watched (1: one job at a time)
  --work-telemetry on|off    ours' API and worker in drain, latency and watchers with
                             telemetry as shipped (on) or OTEL_SDK_DISABLED=true (off)
  --cpu-prof DIR             run the service processes under node --cpu-prof
  --heap-sampling DIR        a sampling heap profile (garbage included) of each worker
  --logs DIR                 keep the service processes' output (one file each)
  --help
`;

/** Raised for a bad command line, with one line per problem. */
export class OptionsError extends Error {
  override readonly name = "OptionsError";
}

/** Parses `argv` (without node and the script); throws OptionsError listing every problem. */
export function parseCompareArgs(argv: string[]): CompareOptions | "help" {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: "boolean" },
      help: { type: "boolean" },
      rounds: { type: "string" },
      only: { type: "string" },
      designs: { type: "string" },
      seconds: { type: "string" },
      warmup: { type: "string" },
      concurrency: { type: "string" },
      backlog: { type: "string" },
      "drain-jobs": { type: "string" },
      "drain-concurrency": { type: "string" },
      rate: { type: "string" },
      "latency-warmup": { type: "string" },
      "latency-seconds": { type: "string" },
      "worker-concurrency": { type: "string" },
      watchers: { type: "string" },
      "watch-jobs": { type: "string" },
      "watch-sessions": { type: "string" },
      "watch-phase-delay": { type: "string" },
      "watch-concurrency": { type: "string" },
      "work-telemetry": { type: "string" },
      "cpu-prof": { type: "string" },
      "heap-sampling": { type: "string" },
      logs: { type: "string" },
    },
  });
  if (values.help) return "help";
  const base = values.quick ? quickOptions : fullOptions;
  const problems: string[] = [];
  const num = (name: string, def: number, min: number, integer: boolean): number => {
    const raw = (values as Record<string, unknown>)[name];
    if (typeof raw !== "string") return def;
    const n = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      problems.push(
        `--${name}: must be ${integer ? "an integer" : "a number"} >= ${min} (got ${raw})`,
      );
      return def;
    }
    return n;
  };
  const list = <T extends string>(name: string, def: T[], allowed: readonly T[]): T[] => {
    const raw = (values as Record<string, unknown>)[name];
    if (typeof raw !== "string") return def;
    const items = raw
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    const bad = items.filter((s) => !(allowed as readonly string[]).includes(s));
    if (items.length === 0 || bad.length > 0) {
      problems.push(`--${name}: a comma-separated list of ${allowed.join(", ")} (got ${raw})`);
      return def;
    }
    return allowed.filter((a) => items.includes(a));
  };
  const drainConcurrency = (() => {
    const raw = values["drain-concurrency"];
    if (raw === undefined) return base.drainConcurrency;
    const items = raw.split(",").map((s) => Number(s.trim()));
    if (items.length === 0 || items.some((n) => !Number.isInteger(n) || n < 1)) {
      problems.push(`--drain-concurrency: a comma-separated list of integers >= 1 (got ${raw})`);
      return base.drainConcurrency;
    }
    return items;
  })();
  const workTelemetry = (() => {
    const raw = values["work-telemetry"];
    if (raw === undefined || raw === "on") return base.workTelemetry;
    if (raw === "off") return false;
    problems.push(`--work-telemetry: on or off (got ${raw})`);
    return base.workTelemetry;
  })();
  const options: CompareOptions = {
    rounds: num("rounds", base.rounds, 1, true),
    only: list("only", base.only, scenarios),
    designs: list<DesignId>("designs", base.designs, ["baseline", "ours"]),
    seconds: num("seconds", base.seconds, 0.1, false),
    warmupSeconds: num("warmup", base.warmupSeconds, 0, false),
    concurrency: num("concurrency", base.concurrency, 1, true),
    backlog: num("backlog", base.backlog, 0, true),
    drainJobs: num("drain-jobs", base.drainJobs, 1, true),
    drainConcurrency,
    rate: num("rate", base.rate, 1, false),
    latencyWarmupSeconds: num("latency-warmup", base.latencyWarmupSeconds, 0, false),
    latencySeconds: num("latency-seconds", base.latencySeconds, 0.1, false),
    workerConcurrency: num("worker-concurrency", base.workerConcurrency, 1, true),
    watchers: num("watchers", base.watchers, 1, true),
    watchJobs: num("watch-jobs", base.watchJobs, 1, true),
    watchSessions: num("watch-sessions", base.watchSessions, 1, true),
    watchPhaseDelayMs: num("watch-phase-delay", base.watchPhaseDelayMs, 0, true),
    watchConcurrency: num("watch-concurrency", base.watchConcurrency, 1, true),
    workTelemetry,
    quick: values.quick === true,
    ...(values["cpu-prof"] === undefined ? {} : { cpuProfDir: values["cpu-prof"] }),
    ...(values["heap-sampling"] === undefined ? {} : { heapSamplingDir: values["heap-sampling"] }),
    ...(values.logs === undefined ? {} : { logDir: values.logs }),
  };
  if (problems.length > 0) throw new OptionsError(problems.join("\n"));
  return options;
}
