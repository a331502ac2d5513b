import { describe, expect, it } from "vitest";
import type { JsonObject, ReportType } from "../../src/domain/job.js";
import {
  abortableDelay,
  PermanentReportError,
  type ReportGenerator,
  type ReportInput,
  TransientReportError,
} from "../../src/worker/generator.js";
import { createCustomReport } from "../../src/worker/generators/custom-report.js";
import { createMonthlyReport } from "../../src/worker/generators/monthly-report.js";
import { createWeeklyReport } from "../../src/worker/generators/weekly-report.js";

const instant = { phaseDelayMs: 0, failRate: 0 };

const generators: Record<ReportType, ReportGenerator> = {
  weekly: createWeeklyReport(instant),
  monthly: createMonthlyReport(instant),
  custom: createCustomReport(instant),
};

function input(reportType: ReportType, filters: JsonObject = {}, userId = "u1"): ReportInput {
  return {
    jobId: "job-1",
    userId,
    reportType,
    filters: { end_date: "2026-01-31", ...filters },
    attempt: 1,
  };
}

/** Runs a generator, recording its progress reports. */
async function run(gen: ReportGenerator, inp: ReportInput, signal = new AbortController().signal) {
  const progress: [number, string][] = [];
  const output = await gen.generate(
    inp,
    async (percent, phase) => {
      progress.push([percent, phase]);
    },
    signal,
  );
  return { output, progress, text: String(output.content) };
}

describe("abortableDelay", () => {
  /** Whether `promise` settles within a few turns of the microtask queue (no timer, no I/O). */
  async function settlesInMicrotasks(promise: Promise<unknown>): Promise<boolean> {
    let settled = false;
    promise.then(
      () => (settled = true),
      () => (settled = true),
    );
    for (let i = 0; i < 5; i++) await Promise.resolve();
    return settled;
  }

  it("does not wait at all for 0 ms (a 0 ms timer would fire a millisecond later)", async () => {
    expect(await settlesInMicrotasks(abortableDelay(0, new AbortController().signal))).toBe(true);
    expect(await settlesInMicrotasks(abortableDelay(-5, new AbortController().signal))).toBe(true);
    // A real delay still waits for its timer.
    const waiting = abortableDelay(5, new AbortController().signal);
    expect(await settlesInMicrotasks(waiting)).toBe(false);
    await waiting;
  });

  it("rejects with the signal's reason, for 0 ms too, once aborted", async () => {
    const aborted = new AbortController();
    aborted.abort(new Error("cancelled"));
    await expect(abortableDelay(0, aborted.signal)).rejects.toThrow("cancelled");
    await expect(abortableDelay(50, aborted.signal)).rejects.toThrow("cancelled");
    const later = new AbortController();
    const sleeping = abortableDelay(60_000, later.signal);
    later.abort(new Error("stopped"));
    await expect(sleeping).rejects.toThrow("stopped");
  });
});

describe("built-in report generators", () => {
  for (const type of ["weekly", "monthly", "custom"] as const) {
    it(`builds the same ${type} report for the same input (safe to re-run)`, async () => {
      const gen = generators[type];
      const a = await run(gen, input(type, { region: "eu" }));
      const b = await run(gen, { ...input(type, { region: "eu" }), jobId: "job-2", attempt: 3 });
      expect(b.output).toEqual(a.output);
      const other = await run(gen, input(type, { region: "eu" }, "u2"));
      expect(other.text).not.toBe(a.text);
      const otherFilters = await run(gen, input(type, { region: "us" }));
      expect(otherFilters.text).not.toBe(a.text);
    });

    it(`reports ${type} progress 40 (fetch-data) then 80 (render)`, async () => {
      const { progress } = await run(generators[type], input(type));
      expect(progress).toEqual([
        [40, "fetch-data"],
        [80, "render"],
      ]);
    });

    it(`stops the ${type} report when its signal aborts`, async () => {
      const controller = new AbortController();
      controller.abort(new Error("stop"));
      await expect(run(generators[type], input(type), controller.signal)).rejects.toThrow("stop");
    });
  }

  it("writes the weekly report as CSV with 7 days ending on end_date", async () => {
    const { output, text } = await run(generators.weekly, input("weekly"));
    expect(output.contentType).toBe("text/csv");
    expect(output.fileName).toBe("weekly-u1.csv");
    const lines = text.trimEnd().split("\r\n");
    expect(lines[0]).toBe("date,sessions,orders,revenue");
    expect(lines).toHaveLength(8);
    expect(lines[1]?.startsWith("2026-01-25,")).toBe(true);
    expect(lines[7]?.startsWith("2026-01-31,")).toBe(true);
  });

  it("writes the monthly report as CSV with 30 days", async () => {
    const { output, text } = await run(generators.monthly, input("monthly"));
    expect(output.contentType).toBe("text/csv");
    expect(text.trimEnd().split("\r\n")).toHaveLength(31);
  });

  it("keeps user ids out of file paths", async () => {
    const { output } = await run(generators.weekly, input("weekly", {}, "../../etc/passwd"));
    expect(output.fileName).not.toContain("/");
    expect(output.fileName).not.toContain("..");
  });

  it("shapes the custom report by its filters", async () => {
    const { output, text } = await run(
      generators.custom,
      input("custom", { days: 3, metrics: ["orders", "revenue"] }),
    );
    expect(output.contentType).toBe("application/json");
    const body = JSON.parse(text) as {
      days: number;
      rows: Record<string, number | string>[];
      totals: Record<string, number>;
    };
    expect(body.days).toBe(3);
    expect(body.rows.map((r) => r.date)).toEqual(["2026-01-29", "2026-01-30", "2026-01-31"]);
    for (const r of body.rows) expect(Object.keys(r).sort()).toEqual(["date", "orders", "revenue"]);
    expect(Object.keys(body.totals).sort()).toEqual(["orders", "revenue"]);
    expect(body.totals.orders).toBe(body.rows.reduce((s, r) => s + Number(r.orders), 0));
  });

  it("rejects bad custom filters as permanent errors, before any work", async () => {
    const bad: JsonObject[] = [
      { days: 0 },
      { days: 367 },
      { days: 1.5 },
      { days: "7" },
      { metrics: [] },
      { metrics: ["bogus"] },
      { metrics: "orders" },
      { metrics: ["orders", 1] },
      { end_date: "yesterday" },
      { end_date: "2026-13-45" },
    ];
    for (const filters of bad) {
      const progress: number[] = [];
      const attempt = generators.custom.generate(
        input("custom", filters),
        async (p) => {
          progress.push(p);
        },
        new AbortController().signal,
      );
      await expect(attempt, JSON.stringify(filters)).rejects.toBeInstanceOf(PermanentReportError);
      expect(progress, JSON.stringify(filters)).toEqual([]);
    }
  });

  it("rejects a bad end_date in CSV reports as a permanent error", async () => {
    await expect(
      run(generators.weekly, input("weekly", { end_date: "31/01/2026" })),
    ).rejects.toBeInstanceOf(PermanentReportError);
  });

  it("injects transient failures at REPORT_FAIL_RATE", async () => {
    const failing = createWeeklyReport({ phaseDelayMs: 0, failRate: 0.5, random: () => 0.1 });
    await expect(run(failing, input("weekly"))).rejects.toBeInstanceOf(TransientReportError);
    const lucky = createWeeklyReport({ phaseDelayMs: 0, failRate: 0.5, random: () => 0.9 });
    await expect(run(lucky, input("weekly"))).resolves.toBeDefined();
  });
});
