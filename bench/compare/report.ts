/**
 * The figures of a compare run: what each design measured in each round,
 * the rows of the comparison (which figure of ours is set against which of
 * the baseline's, and which direction is better), the medians and ratios, and
 * how they print: an aligned table and one JSON line.
 */
import type { DesignId } from "./designs.js";
import type { CompareOptions, Scenario } from "./options.js";

/** Which direction of a figure is better. */
export type Better = "higher" | "lower";

/** A figure of one design: a recorded key, or derived from recorded medians. */
type Source = string | ((median: (key: string) => number | undefined) => number | undefined);

/** One row of the comparison. */
export interface Row {
  /** Stable id, the key of the figure in the JSON line. */
  id: string;
  scenario: Scenario;
  /** The heading the row prints under. */
  section: string;
  measure: string;
  better: Better;
  ours: Source;
  /** Absent: ours only (no ratio). */
  baseline?: Source;
}

/** Collects what each design measured, round by round. */
export class Figures {
  private readonly values = new Map<string, number[]>();
  readonly errors: string[] = [];

  /** Adds one round's value of `key` for `design`. */
  record(design: DesignId, key: string, value: number): void {
    const k = `${design}:${key}`;
    let list = this.values.get(k);
    if (list === undefined) {
      list = [];
      this.values.set(k, list);
    }
    list.push(value);
  }

  /** Notes a problem (failed calls, unfinished jobs); the run then exits 1. */
  error(message: string): void {
    this.errors.push(message);
  }

  /** Every round's value of `key` for `design`. */
  rounds(design: DesignId, key: string): number[] {
    return this.values.get(`${design}:${key}`) ?? [];
  }

  /** The median over rounds, undefined when never recorded. */
  median(design: DesignId, key: string): number | undefined {
    return median(this.rounds(design, key));
  }
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** The rows of a run with `o`, in print order. */
export function rowsFor(o: CompareOptions): Row[] {
  const rows: Row[] = [];
  const closedLoop = (
    scenario: Scenario,
    id: string,
    section: string,
    oursKey: string,
    baselineKey: string,
  ) => {
    const measures: [string, string, Better][] = [
      ["rps", "req/s", "higher"],
      ["p50Ms", "p50 ms", "lower"],
      ["p99Ms", "p99 ms", "lower"],
      ["apiCpuUsPerReq", "API CPU µs/req", "lower"],
      ["redisCpuUsPerReq", "Redis CPU µs/req", "lower"],
    ];
    for (const [m, measure, better] of measures) {
      rows.push({
        id: `${id}.${m}`,
        scenario,
        section,
        measure,
        better,
        ours: `${oursKey}.${m}`,
        baseline: `${baselineKey}.${m}`,
      });
    }
  };
  /** Rows whose figure has the same key for both designs: `${prefix}.${measure key}`. */
  const sameKey = (
    scenario: Scenario,
    prefix: string,
    section: string,
    measures: [string, string, Better][],
  ) => {
    for (const [m, measure, better] of measures) {
      const key = `${prefix}.${m}`;
      rows.push({ id: key, scenario, section, measure, better, ours: key, baseline: key });
    }
  };
  const c = `${o.concurrency} in flight`;
  if (o.only.includes("submit")) {
    closedLoop(
      "submit",
      "submit.connectJson.otelOn",
      `submit: ours Connect JSON (HTTP/1.1), telemetry on / baseline JSON POST; ${c}`,
      "submit.json",
      "submit.json",
    );
    closedLoop(
      "submit",
      "submit.grpc.otelOn",
      `submit: ours gRPC (HTTP/2), telemetry on / baseline JSON POST; ${c}`,
      "submit.grpc",
      "submit.json",
    );
    closedLoop(
      "submit",
      "submit.connectJson.otelOff",
      `submit: ours Connect JSON, OTEL_SDK_DISABLED=true / baseline JSON POST; ${c}`,
      "submit.jsonOff",
      "submit.json",
    );
    closedLoop(
      "submit",
      "submit.grpc.otelOff",
      `submit: ours gRPC, OTEL_SDK_DISABLED=true / baseline JSON POST; ${c}`,
      "submit.grpcOff",
      "submit.json",
    );
    const onOff = (on: string, off: string) => (m: (k: string) => number | undefined) => {
      const a = m(on);
      const b = m(off);
      return a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
    };
    const section = "submit: ours, telemetry on / off (req/s)";
    rows.push(
      {
        id: "submit.connectJson.onOverOff",
        scenario: "submit",
        section,
        measure: "Connect JSON",
        better: "higher",
        ours: onOff("submit.json.rps", "submit.jsonOff.rps"),
      },
      {
        id: "submit.grpc.onOverOff",
        scenario: "submit",
        section,
        measure: "gRPC",
        better: "higher",
        ours: onOff("submit.grpc.rps", "submit.grpcOff.rps"),
      },
    );
  }
  if (o.only.includes("getjob")) {
    closedLoop(
      "getjob",
      "getJob.emptyQueue",
      `GetJob (Connect GET) / baseline status route (getJob + getState), empty queue; ${c}`,
      "getjob.empty",
      "getjob.empty",
    );
    closedLoop(
      "getjob",
      "getJob.behindBacklog",
      `GetJob / status route, behind ${o.backlog} waiting jobs; ${c}`,
      "getjob.backlog",
      "getjob.backlog",
    );
    closedLoop(
      "getjob",
      "getJob.emptyAgain",
      `GetJob / status route, empty queue again (the backlog removed, a new job); ${c}`,
      "getjob.emptyAgain",
      "getjob.emptyAgain",
    );
    // Behind the backlog against the mean of the empty measurements before
    // and after it (the first alone when there is no second).
    const flat = (m: (k: string) => number | undefined) => {
      const a = m("getjob.backlog.rps");
      const before = m("getjob.empty.rps");
      const after = m("getjob.emptyAgain.rps");
      const b = before === undefined || after === undefined ? before : (before + after) / 2;
      return a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
    };
    rows.push({
      id: "getJob.backlogOverEmpty",
      scenario: "getjob",
      section:
        "GetJob / status route: req/s behind the backlog / empty queue (mean of before and after)",
      measure: "ratio",
      better: "higher",
      ours: flat,
      baseline: flat,
    });
  }
  if (o.only.includes("drain")) {
    for (const conc of o.drainConcurrency) {
      const section = `drain ${o.drainJobs} queued no-op jobs (REPORT_PHASE_DELAY_MS=0), worker concurrency ${conc}`;
      sameKey("drain", `drain.c${conc}`, section, [
        ["jobsPerSec", "jobs/s", "higher"],
        ["workerCpuUsPerJob", "worker CPU µs/job", "lower"],
        ["redisCpuUsPerJob", "Redis CPU µs/job", "lower"],
        ["scriptCallsPerJob", "Redis script calls/job (EVALSHA, EVAL)", "lower"],
        ["workerAllocKbPerJob", "worker heap allocated KB/job", "lower"],
        ["workerScavengesPer1000Jobs", "worker scavenges/1,000 jobs", "lower"],
      ]);
    }
  }
  if (o.only.includes("latency")) {
    const section = `enqueue to complete at a steady ${o.rate} jobs/s (one API, one worker at concurrency ${o.workerConcurrency}, ${o.latencyWarmupSeconds} s warm-up, ${o.latencySeconds} s measured)`;
    sameKey("latency", "latency", section, [
      ["p50Ms", "p50 ms", "lower"],
      ["p99Ms", "p99 ms", "lower"],
      ["cpuMsPerJob", "CPU ms/job (API + worker + Redis)", "lower"],
      ["workerAllocKbPerJob", "worker heap allocated KB/job", "lower"],
      ["workerScavengesPer1000Jobs", "worker scavenges/1,000 jobs", "lower"],
      ["ratePerSec", "submitted jobs/s", "higher"],
    ]);
  }
  if (o.only.includes("watchers")) {
    const section = `${o.watchers} watchers on ${o.watchJobs} jobs run ${o.watchConcurrency} at a time, ${o.watchPhaseDelayMs} ms phases (ours: WatchJob over ${o.watchSessions} HTTP/2 connections; baseline: SSE, one XREAD BLOCK connection each)`;
    sameKey("watchers", "watchers", section, [
      ["openMs", "open all, ms", "lower"],
      ["apiRedisConnections", "API's Redis connections while open", "lower"],
      ["rssKbPerWatcher", "API RSS KB/watcher", "lower"],
      ["heapKbPerWatcher", "API heap KB/watcher (after GC)", "lower"],
      ["deliveryP50Ms", "event delivery p50 ms", "lower"],
      ["deliveryP99Ms", "event delivery p99 ms", "lower"],
      ["apiCpuUsPerDelivery", "API CPU µs/delivered event", "lower"],
    ]);
  }
  return rows;
}

/** A row's figures: medians over rounds, the ratio ours / baseline, and every round. */
export interface RowResult {
  row: Row;
  ours?: number;
  baseline?: number;
  ratio?: number;
  oursRounds: number[];
  baselineRounds: number[];
}

function resolve(
  figures: Figures,
  design: DesignId,
  source: Source | undefined,
): { median?: number; rounds: number[] } {
  if (source === undefined) return { rounds: [] };
  if (typeof source === "string")
    return { median: figures.median(design, source), rounds: figures.rounds(design, source) };
  return { median: source((key) => figures.median(design, key)), rounds: [] };
}

/** Every row's result. */
export function results(rows: readonly Row[], figures: Figures): RowResult[] {
  return rows.map((row) => {
    const o = resolve(figures, "ours", row.ours);
    const b = resolve(figures, "baseline", row.baseline);
    const ratio =
      o.median !== undefined && b.median !== undefined && b.median !== 0
        ? o.median / b.median
        : undefined;
    return {
      row,
      ...(o.median === undefined ? {} : { ours: o.median }),
      ...(b.median === undefined ? {} : { baseline: b.median }),
      ...(ratio === undefined ? {} : { ratio }),
      oursRounds: o.rounds,
      baselineRounds: b.rounds,
    };
  });
}

/** Where and how the run happened, for the header and the JSON line. */
export interface RunInfo {
  node: string;
  redis: string;
  cpus: number;
  cpuModel: string;
  /** 1-minute load averages when the run started and ended. */
  loadAverage: { start: number; end: number };
  /** Wall time of the whole run, in seconds. */
  seconds: number;
}

/** Three significant digits or so: 1234, 123, 12.3, 1.23. */
export function formatNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function withRange(median: number | undefined, rounds: readonly number[]): string {
  if (median === undefined) return "-";
  if (rounds.length < 2) return formatNumber(median);
  return `${formatNumber(median)} (${formatNumber(Math.min(...rounds))}-${formatNumber(Math.max(...rounds))})`;
}

/** The results as an aligned table, a heading line per section. */
export function formatTable(
  rs: readonly RowResult[],
  o: CompareOptions,
  info: RunInfo,
  errors: readonly string[],
): string {
  const head = ["", "ours", "baseline", "ours/baseline", "better"];
  const lines: (string[] | string)[] = [];
  let section = "";
  for (const r of rs) {
    if (r.row.section !== section) {
      section = r.row.section;
      lines.push(section);
    }
    lines.push([
      `  ${r.row.measure}`,
      withRange(r.ours, r.oursRounds),
      withRange(r.baseline, r.baselineRounds),
      r.ratio === undefined ? "-" : `${r.ratio.toFixed(2)}x`,
      r.row.better,
    ]);
  }
  const cells = lines.filter((l): l is string[] => Array.isArray(l));
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]?.length ?? 0)));
  const fmt = (c: string[]) =>
    c
      .map((s, i) => (i === 0 ? s.padEnd(widths[i] ?? 0) : s.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [
    `bench:compare: ${
      o.rounds > 1 ? `${o.rounds} rounds, medians (min-max over rounds)` : "1 round"
    }; ratio = ours / baseline${o.quick ? "; --quick" : ""}`,
    `node ${info.node}, redis ${info.redis}, ${info.cpus} x ${info.cpuModel}; load average ${info.loadAverage.start.toFixed(2)} at start, ${info.loadAverage.end.toFixed(2)} at end; ${Math.round(info.seconds)} s`,
    "",
    fmt(head),
    ...lines.map((l) => (typeof l === "string" ? l : fmt(l))),
    ...(errors.length > 0 ? ["", "errors:", ...errors.map((e) => `  ${e}`)] : []),
  ].join("\n");
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** The results as one JSON line: every figure by row id, with the options and environment. */
export function formatJson(
  rs: readonly RowResult[],
  o: CompareOptions,
  info: RunInfo,
  errors: readonly string[],
): string {
  const figures: Record<string, unknown> = {};
  for (const r of rs) {
    figures[r.row.id] = {
      measure: r.row.measure,
      better: r.row.better,
      ours: r.ours === undefined ? null : round3(r.ours),
      baseline: r.baseline === undefined ? null : round3(r.baseline),
      ratio: r.ratio === undefined ? null : round3(r.ratio),
      oursRounds: r.oursRounds.map(round3),
      baselineRounds: r.baselineRounds.map(round3),
    };
  }
  return JSON.stringify({ bench: "compare", options: o, environment: info, figures, errors });
}
