/**
 * The pure parts of bench:compare: its command line, and how figures become
 * medians, ratios, a table and one JSON line.
 */
import { describe, expect, it } from "vitest";
import {
  fullOptions,
  parseCompareArgs,
  quickOptions,
  scenarios,
} from "../../bench/compare/options.js";
import {
  Figures,
  formatJson,
  formatTable,
  median,
  type RunInfo,
  results,
  rowsFor,
} from "../../bench/compare/report.js";

const info: RunInfo = {
  node: "v20.0.0",
  redis: "7.0.15",
  cpus: 2,
  cpuModel: "test",
  loadAverage: { start: 1, end: 2 },
  seconds: 3,
};

describe("parseCompareArgs()", () => {
  it("defaults to the full comparison and lets --quick shorten it, explicit options winning", () => {
    expect(parseCompareArgs([])).toEqual(fullOptions);
    expect(parseCompareArgs(["--quick"])).toEqual(quickOptions);
    const o = parseCompareArgs(["--quick", "--rounds", "2", "--only", "drain,submit"]);
    expect(o).toMatchObject({ quick: true, rounds: 2, only: ["submit", "drain"], seconds: 1 });
    expect(parseCompareArgs(["--cpu-prof", "prof", "--drain-concurrency", "5,25"])).toMatchObject({
      cpuProfDir: "prof",
      drainConcurrency: [5, 25],
    });
    expect(parseCompareArgs(["--heap-sampling", "heap"])).toMatchObject({
      heapSamplingDir: "heap",
    });
    expect(parseCompareArgs([])).not.toHaveProperty("heapSamplingDir");
    expect(parseCompareArgs([])).toMatchObject({ workTelemetry: true });
    expect(parseCompareArgs(["--work-telemetry", "off"])).toMatchObject({ workTelemetry: false });
    expect(parseCompareArgs(["--work-telemetry", "on"])).toMatchObject({ workTelemetry: true });
    expect(parseCompareArgs(["--help"])).toBe("help");
  });

  it("reports every bad value at once", () => {
    expect(() =>
      parseCompareArgs(["--rounds", "0", "--only", "submit,nope", "--designs", "theirs"]),
    ).toThrow(/--rounds: must be an integer >= 1 \(got 0\)\n--only: .*\n--designs: /);
    expect(() => parseCompareArgs(["--bogus"])).toThrow(/bogus/);
    expect(() => parseCompareArgs(["--work-telemetry", "maybe"])).toThrow(
      /--work-telemetry: on or off \(got maybe\)/,
    );
  });
});

describe("median()", () => {
  it("takes the middle value, or the mean of the middle two", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeUndefined();
  });
});

describe("rowsFor() and results()", () => {
  it("has one row per figure of the selected scenarios, with unique ids", () => {
    const all = rowsFor(fullOptions);
    expect(new Set(all.map((r) => r.id)).size).toBe(all.length);
    expect(new Set(all.map((r) => r.scenario))).toEqual(new Set(scenarios));
    const drainOnly = rowsFor({ ...fullOptions, only: ["drain"], drainConcurrency: [7] });
    expect(drainOnly.map((r) => r.id)).toEqual([
      "drain.c7.jobsPerSec",
      "drain.c7.workerCpuUsPerJob",
      "drain.c7.redisCpuUsPerJob",
      "drain.c7.scriptCallsPerJob",
      "drain.c7.workerAllocKbPerJob",
      "drain.c7.workerScavengesPer1000Jobs",
    ]);
  });

  it("sets the medians of ours against the baseline's, and derives on/off ratios", () => {
    const f = new Figures();
    for (const [o, b] of [
      [100, 200],
      [300, 100],
      [200, 400],
    ] as const) {
      f.record("ours", "submit.json.rps", o);
      f.record("baseline", "submit.json.rps", b);
    }
    f.record("ours", "submit.jsonOff.rps", 400);
    const rows = rowsFor({ ...fullOptions, only: ["submit"] });
    const byId = new Map(results(rows, f).map((r) => [r.row.id, r]));
    expect(byId.get("submit.connectJson.otelOn.rps")).toMatchObject({
      ours: 200,
      baseline: 200,
      ratio: 1,
      oursRounds: [100, 300, 200],
    });
    // gRPC is set against the same baseline figure; ours was not measured here.
    expect(byId.get("submit.grpc.otelOn.rps")?.ours).toBeUndefined();
    expect(byId.get("submit.grpc.otelOn.rps")?.baseline).toBe(200);
    expect(byId.get("submit.connectJson.onOverOff")?.ours).toBe(0.5);
  });

  it("sets GetJob behind the backlog against the mean of the empty queue before and after it", () => {
    const f = new Figures();
    f.record("ours", "getjob.empty.rps", 1000);
    f.record("ours", "getjob.backlog.rps", 1200);
    f.record("ours", "getjob.emptyAgain.rps", 1400);
    f.record("baseline", "getjob.empty.rps", 500);
    f.record("baseline", "getjob.backlog.rps", 250);
    const rows = rowsFor({ ...fullOptions, only: ["getjob"] });
    const byId = new Map(results(rows, f).map((r) => [r.row.id, r]));
    expect(byId.get("getJob.backlogOverEmpty")).toMatchObject({ ours: 1, baseline: 0.5 });
    expect(byId.get("getJob.emptyAgain.redisCpuUsPerReq")).toBeDefined();
  });

  it("prints every row in the table and every figure in one JSON line", () => {
    const f = new Figures();
    const rows = rowsFor({ ...fullOptions, only: ["watchers"] });
    for (const r of rows) {
      f.record("ours", r.ours as string, 2);
      f.record("baseline", r.baseline as string, 4);
    }
    f.error("round 1, ours, watchers: 3 of 8 events delivered");
    const rs = results(rows, f);
    const table = formatTable(rs, fullOptions, info, f.errors);
    for (const r of rows) expect(table).toContain(`  ${r.measure}`);
    expect(table).toContain("0.50x");
    expect(table).toContain("3 of 8 events delivered");
    const json = formatJson(rs, fullOptions, info, f.errors);
    expect(json).not.toContain("\n");
    const parsed = JSON.parse(json) as { figures: Record<string, { ratio: number }> };
    expect(Object.keys(parsed.figures)).toEqual(rows.map((r) => r.id));
    expect(parsed.figures["watchers.openMs"]?.ratio).toBe(0.5);
  });
});
