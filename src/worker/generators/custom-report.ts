/**
 * The custom report: JSON shaped by the filters. `filters.days` (1-366,
 * default 14) sets the window and `filters.metrics` (any of "sessions",
 * "orders", "revenue") the columns.
 */
import { PermanentReportError, type ReportGenerator } from "../generator.js";
import { dailyActivity, endDateOf } from "./sample-data.js";
import { runPhase, type SimulationSettings, simulateWork } from "./simulated-work.js";

const allMetrics = ["sessions", "orders", "revenue"] as const;
type Metric = (typeof allMetrics)[number];

/** Creates the custom generator. */
export function createCustomReport(settings: SimulationSettings): ReportGenerator {
  return {
    async generate(input, progress, signal) {
      const { filters } = input;
      const days = filters.days ?? 14;
      if (typeof days !== "number" || !Number.isInteger(days) || days < 1 || days > 366) {
        throw new PermanentReportError("filters.days must be an integer from 1 to 366");
      }
      const metrics = filters.metrics ?? [...allMetrics];
      if (
        !Array.isArray(metrics) ||
        metrics.length === 0 ||
        !metrics.every((m) => allMetrics.includes(m as Metric))
      ) {
        throw new PermanentReportError(
          `filters.metrics must be a non-empty list of ${allMetrics.join(", ")}`,
        );
      }
      const end = endDateOf(filters);
      if (end === undefined)
        throw new PermanentReportError("filters.end_date must be a date like 2026-01-31");
      await runPhase(settings, signal, progress, 40, "fetch-data");
      const rows = dailyActivity(input.userId, filters, days, end).map((r) => {
        const row: Record<string, string | number> = { date: r.date };
        for (const m of metrics as Metric[]) row[m] = m === "revenue" ? r.revenueCents / 100 : r[m];
        return row;
      });
      const totals: Record<string, number> = {};
      for (const m of metrics as Metric[]) totals[m] = rows.reduce((s, r) => s + Number(r[m]), 0);
      await runPhase(settings, signal, progress, 80, "render");
      const body = JSON.stringify(
        { userId: input.userId, reportType: "custom", filters, days, totals, rows },
        null,
        2,
      );
      await simulateWork(settings, signal, "completed");
      return {
        fileName: "custom-report.json",
        contentType: "application/json",
        content: `${body}\n`,
      };
    },
  };
}
