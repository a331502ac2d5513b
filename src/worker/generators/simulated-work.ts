/**
 * The simulated slow parts of the built-in generators: each phase takes
 * REPORT_PHASE_DELAY_MS, and REPORT_FAIL_RATE injects transient failures.
 */
import { abortableDelay, type ProgressReporter, TransientReportError } from "../generator.js";

/** How the built-in generators simulate a slow data source. */
export interface SimulationSettings {
  phaseDelayMs: number;
  failRate: number;
  random?: () => number;
}

/** Waits out the work leading to `phase` (abortably) and may fail it. */
export async function simulateWork(
  settings: SimulationSettings,
  signal: AbortSignal,
  phase: string,
): Promise<void> {
  await abortableDelay(settings.phaseDelayMs, signal);
  if (settings.failRate > 0 && (settings.random ?? Math.random)() < settings.failRate) {
    throw new TransientReportError(
      `transient failure before ${phase} (simulated by REPORT_FAIL_RATE)`,
    );
  }
}

/** Simulates the work leading to `phase`, then reports reaching it. */
export async function runPhase(
  settings: SimulationSettings,
  signal: AbortSignal,
  progress: ProgressReporter,
  percent: number,
  phase: string,
): Promise<void> {
  await simulateWork(settings, signal, phase);
  await progress(percent, phase);
}
