/**
 * Keeps `npm run bench` and `npm run bench:compare` working: their load
 * generators, one short run of the whole benchmark (own redis-server,
 * service, load process), and one tiny run of the comparison as the CLI
 * (both designs, every scenario, under --cpu-prof). Asserts the shape of the
 * figures only, never timings: this machine is shared.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseCompareArgs } from "../../bench/compare/options.js";
import { rowsFor } from "../../bench/compare/report.js";
import {
  type Measurement,
  measure,
  measureCount,
  openLoop,
  percentile,
} from "../../bench/measure.js";
import { formatJson, formatTable, runReportBenchmark } from "../../bench/report-bench.js";

function expectSane(m: Measurement, what: string) {
  expect(m.errors, `${what}: ${m.firstError}`).toBe(0);
  expect(m.requests, what).toBeGreaterThan(0);
  expect(m.seconds, what).toBeGreaterThan(0);
  expect(m.rps, what).toBeGreaterThan(0);
  expect(m.p50Ms, what).toBeGreaterThan(0);
  expect(m.p50Ms, what).toBeLessThanOrEqual(m.p99Ms);
  expect(m.p99Ms, what).toBeLessThanOrEqual(m.maxMs);
}

describe("measure()", () => {
  it("keeps `concurrency` calls in flight and counts only the measured window", async () => {
    let inFlight = 0;
    let peak = 0;
    const seen = new Set<number>();
    const m = await measure(
      async (seq) => {
        seen.add(seq);
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setImmediate(r));
        inFlight--;
      },
      { concurrency: 4, durationMs: 150, warmupMs: 50 },
    );
    expectSane(m, "measure");
    expect(peak).toBe(4);
    // Warm-up calls got sequence numbers too but are not counted.
    expect(seen.size).toBeGreaterThan(m.requests);
  });

  it("counts failed calls apart and keeps the first message", async () => {
    const m = await measure(
      async (seq) => {
        await new Promise((r) => setImmediate(r));
        if (seq % 2 === 1) throw new Error(`odd ${seq}`);
      },
      { concurrency: 2, durationMs: 100, warmupMs: 0 },
    );
    expect(m.errors).toBeGreaterThan(0);
    expect(m.firstError).toMatch(/^odd \d+$/);
    expect(m.requests).toBeGreaterThan(0);
  });

  it("measureCount() makes exactly `count` calls, `concurrency` at a time", async () => {
    let inFlight = 0;
    let peak = 0;
    const r = await measureCount(
      async (seq) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((res) => setImmediate(res));
        inFlight--;
        if (seq === 3) throw new Error("three");
        return seq;
      },
      { count: 20, concurrency: 5 },
    );
    expect(peak).toBe(5);
    expect(r.values.sort((a, b) => a - b)).toEqual([...Array(20).keys()].filter((n) => n !== 3));
    expect(r.errors).toBe(1);
    expect(r.firstError).toBe("three");
  });

  it("openLoop() starts calls at the rate whatever their latency and counts only the window", async () => {
    const started: number[] = [];
    const r = await openLoop(
      async (seq) => {
        started.push(seq);
        // Slower than the interval: an open loop does not wait for it.
        await new Promise((res) => setTimeout(res, 30));
        return seq;
      },
      { ratePerSec: 200, warmupMs: 50, durationMs: 200 },
    );
    // 200/s over 250 ms: every one of the 50 calls due is made, about 40 in the window.
    expect(started.length).toBe(50);
    expect(r.calls.length).toBeGreaterThan(10);
    expect(r.calls.length).toBeLessThan(started.length);
    expect(r.errors).toBe(0);
    for (const c of r.calls) expect(c.sentAtMs).toBeGreaterThan(Date.now() - 60_000);
    expect(r.p50Ms).toBeGreaterThanOrEqual(25);
  });

  it("takes nearest-rank percentiles", () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 0.5)).toBe(50);
    expect(percentile(sorted, 0.99)).toBe(99);
    expect(percentile(new Float64Array(0), 0.5)).toBe(0);
  });
});

describe("runReportBenchmark()", () => {
  it("measures submit, raw queue.add and GetJob, with ratios, in one short run", async () => {
    const r = await runReportBenchmark({
      seconds: 0.5,
      warmupSeconds: 0.1,
      concurrency: 4,
      backlog: 300,
      callers: "process",
    });
    expectSane(r.submit.connectJson, "SubmitReport Connect JSON");
    expectSane(r.submit.grpc, "SubmitReport gRPC");
    expectSane(r.submit.rawQueueAdd, "raw queue.add");
    expectSane(r.getJob.emptyQueue, "GetJob empty");
    expectSane(r.getJob.behindBacklog, "GetJob backlog");
    expect(r.submit.connectJsonVsRaw).toBeCloseTo(
      r.submit.connectJson.rps / r.submit.rawQueueAdd.rps,
    );
    expect(r.submit.grpcVsRaw).toBeCloseTo(r.submit.grpc.rps / r.submit.rawQueueAdd.rps);
    expectSane(r.submit.noopConnectJson, "no-op Connect JSON");
    expectSane(r.submit.noopGrpc, "no-op gRPC");
    expect(r.submit.connectJsonVsNoop).toBeCloseTo(
      r.submit.connectJson.rps / r.submit.noopConnectJson.rps,
    );
    expect(r.getJob.backlogVsEmpty).toBeCloseTo(
      r.getJob.behindBacklog.rps / r.getJob.emptyQueue.rps,
    );
    expect(r.getJob.waitingJobs).toBeGreaterThanOrEqual(300);
    // Every call costs CPU in the callers and in Redis; the service works on all but raw adds.
    for (const [what, f] of [
      ["SubmitReport Connect JSON", r.submit.connectJson],
      ["SubmitReport gRPC", r.submit.grpc],
      ["GetJob empty", r.getJob.emptyQueue],
      ["GetJob backlog", r.getJob.behindBacklog],
    ] as const) {
      expect(f.cpuPerCallUs.caller, what).toBeGreaterThan(0);
      expect(f.cpuPerCallUs.service, what).toBeGreaterThan(0);
      expect(f.cpuPerCallUs.redis, what).toBeGreaterThan(0);
    }
    expect(r.submit.rawQueueAdd.cpuPerCallUs.caller).toBeGreaterThan(0);
    expect(r.submit.rawQueueAdd.cpuPerCallUs.redis).toBeGreaterThan(0);
    expect(r.environment.redis).toMatch(/^\d+\.\d+/);

    const table = formatTable(r);
    expect(table).toContain("SubmitReport  Connect JSON, HTTP/1.1");
    expect(table).toContain("raw BullMQ queue.add");
    expect(table).toContain("CPU µs/call");
    expect(table.split("\n").length).toBe(11);
    expect(table).toContain("no-op handler");
    const json = formatJson(r);
    expect(json).not.toContain("\n");
    expect(JSON.parse(json).submit.grpc.requests).toBe(r.submit.grpc.requests);
  });
});

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

describe("npm run bench:compare", () => {
  it("prints every figure of both designs and one JSON line in a tiny run", async () => {
    const profiles = mkdtempSync(path.join(tmpdir(), "report-jobs-compare-prof-"));
    const args = [
      "--rounds=1",
      "--seconds=0.3",
      "--warmup=0.1",
      "--backlog=200",
      "--drain-jobs=40",
      "--rate=40",
      "--latency-warmup=0.3",
      "--latency-seconds=1",
      "--watchers=12",
      "--watch-jobs=3",
      "--watch-phase-delay=5",
      `--cpu-prof=${profiles}`,
    ];
    try {
      const child = spawn(process.execPath, ["--import", "tsx", "bench/compare/main.ts", ...args], {
        cwd: repoRoot,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (c: string) => {
        stdout += c;
      });
      child.stderr.setEncoding("utf8").on("data", (c: string) => {
        stderr += c;
      });
      const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
      expect(code, `${stdout}\n${stderr}`).toBe(0);

      const lines = stdout.trimEnd().split("\n");
      const json = JSON.parse(lines.at(-1) ?? "") as {
        options: unknown;
        figures: Record<string, { ours: unknown; baseline: unknown; ratio: unknown }>;
        errors: string[];
      };
      const table = lines.slice(0, -1).join("\n");
      const options = parseCompareArgs(args);
      if (options === "help") throw new Error("unexpected --help");
      expect(json.options).toEqual(options);
      expect(json.errors).toEqual([]);
      const rows = rowsFor(options);
      expect(rows.length).toBeGreaterThan(40);
      expect(Object.keys(json.figures).sort()).toEqual(rows.map((r) => r.id).sort());
      for (const row of rows) {
        expect(table, row.id).toContain(row.section);
        const f = json.figures[row.id];
        expect(Number.isFinite(f?.ours), `${row.id}: ours ${f?.ours}`).toBe(true);
        if (row.baseline === undefined) continue;
        expect(Number.isFinite(f?.baseline), `${row.id}: baseline ${f?.baseline}`).toBe(true);
        if (f?.baseline !== 0) expect(Number.isFinite(f?.ratio), `${row.id}: ratio`).toBe(true);
      }
      // What the watcher comparison is about: one Redis connection per naive watcher.
      const conns = json.figures["watchers.apiRedisConnections"];
      expect(conns?.baseline).toBeGreaterThanOrEqual(12);
      expect(conns?.ours).toBeLessThan(12);
      // --cpu-prof: a profile per service process, of both designs and both roles.
      const written = readdirSync(profiles);
      for (const name of ["ours-r1-accept-api", "baseline-r1-work-api", "ours-r1-work-worker"])
        expect(
          written.some((f) => f.startsWith(name) && f.endsWith(".cpuprofile")),
          name,
        ).toBe(true);
      // The main thread's profile, not tsx's module-hooks thread's: it ran the service's code.
      const apiProfile = JSON.parse(
        readFileSync(path.join(profiles, "ours-r1-accept-api.cpuprofile"), "utf8"),
      ) as { nodes: { callFrame: { url: string } }[] };
      expect(apiProfile.nodes.some((n) => n.callFrame.url.includes("/src/api/"))).toBe(true);
    } finally {
      rmSync(profiles, { recursive: true, force: true });
    }
  }, 300_000);
});
