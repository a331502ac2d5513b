/**
 * Keeps `npm run bench` working: its load generator and one short run of the
 * whole benchmark (own redis-server, service, load process). Asserts the
 * shape of the figures only, never timings: this machine is shared.
 */
import { describe, expect, it } from "vitest";
import { type Measurement, measure, percentile } from "../../bench/measure.js";
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
