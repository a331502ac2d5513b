/**
 * A closed-loop load generator: `concurrency` callers, each starting its next
 * call as soon as the previous one settles, for a fixed time after a warm-up.
 * The callers never stop between warm-up and measurement, so the measured
 * window sees the steady state, not a ramp.
 */
import { performance } from "node:perf_hooks";

/** What one measurement found. Latencies are per call, in milliseconds. */
export interface Measurement {
  /** Calls that started inside the measured window and succeeded. */
  requests: number;
  /** Calls that started inside the measured window and failed. */
  errors: number;
  /** The first failure's message, when there was one. */
  firstError?: string;
  /** Length of the measured window, from its start to the last counted call's end. */
  seconds: number;
  /** Successful calls per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** CPU time (user + system) this process spent during the measured window, in microseconds. */
  cpuUs: number;
}

/** How hard and how long to push. */
export interface MeasureOptions {
  /** Calls in flight at every moment. */
  concurrency: number;
  /** Length of the measured window. */
  durationMs: number;
  /** Calls before the window starts are not counted. */
  warmupMs: number;
}

/**
 * Runs `call` from `concurrency` loops. `call` gets a sequence number unique
 * within this measurement (warm-up included), e.g. to build unique keys.
 */
export async function measure(
  call: (seq: number) => Promise<unknown>,
  options: MeasureOptions,
): Promise<Measurement> {
  const { concurrency, durationMs, warmupMs } = options;
  if (!(concurrency >= 1) || !(durationMs > 0) || !(warmupMs >= 0)) {
    throw new Error("measure: concurrency >= 1, durationMs > 0 and warmupMs >= 0 are required");
  }
  const t0 = performance.now();
  const windowStart = t0 + warmupMs;
  const windowEnd = windowStart + durationMs;
  const latencies: number[] = [];
  let seq = 0;
  let errors = 0;
  let firstError: string | undefined;
  let lastEnd = windowStart;
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  const cpuTimer = setTimeout(() => {
    cpuAtStart = process.cpuUsage();
  }, warmupMs);

  const loop = async () => {
    for (;;) {
      const start = performance.now();
      if (start >= windowEnd) return;
      let failed = false;
      try {
        await call(seq++);
      } catch (err) {
        failed = true;
        if (start >= windowStart) {
          errors++;
          firstError ??= err instanceof Error ? err.message : String(err);
        }
      }
      const end = performance.now();
      if (start >= windowStart) {
        if (!failed) latencies.push(end - start);
        if (end > lastEnd) lastEnd = end;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  clearTimeout(cpuTimer);
  const cpu = process.cpuUsage(cpuAtStart);

  const seconds = (lastEnd - windowStart) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  return {
    requests: sorted.length,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    seconds,
    rps: seconds > 0 ? sorted.length / seconds : 0,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : 0,
    cpuUs: cpuAtStart === undefined ? 0 : cpu.user + cpu.system,
  };
}

/** The nearest-rank percentile `q` (0-1) of ascending `sorted`; 0 when empty. */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1] as number;
}
