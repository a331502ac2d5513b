/** The monthly report: the last 30 days of activity as CSV. */
import type { ReportGenerator } from "../generator.js";
import type { SimulationSettings } from "./simulated-work.js";
import { createDailyCsvReport } from "./weekly-report.js";

/** Creates the monthly generator. */
export function createMonthlyReport(settings: SimulationSettings): ReportGenerator {
  return createDailyCsvReport(settings, 30, "monthly");
}
