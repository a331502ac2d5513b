/** The weekly report: the last 7 days of activity as CSV. */
import { PermanentReportError, type ReportGenerator } from "../generator.js";
import { dailyActivity, endDateOf, toCsv } from "./sample-data.js";
import { runPhase, type SimulationSettings, simulateWork } from "./simulated-work.js";

/** Creates the weekly generator. */
export function createWeeklyReport(settings: SimulationSettings): ReportGenerator {
  return createDailyCsvReport(settings, 7, "weekly");
}

/** A CSV report of `days` days; shared by the weekly and monthly generators. */
export function createDailyCsvReport(
  settings: SimulationSettings,
  days: number,
  name: string,
): ReportGenerator {
  return {
    async generate(input, progress, signal) {
      const end = endDateOf(input.filters);
      if (end === undefined)
        throw new PermanentReportError("filters.end_date must be a date like 2026-01-31");
      await runPhase(settings, signal, progress, 40, "fetch-data");
      const rows = dailyActivity(input.userId, input.filters, days, end);
      await runPhase(settings, signal, progress, 80, "render");
      const csv = toCsv(rows);
      await simulateWork(settings, signal, "completed");
      return {
        fileName: `${name}-${input.userId.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 40)}.csv`,
        contentType: "text/csv",
        content: csv,
      };
    },
  };
}
