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

/** What `measureCount` found. */
export interface CountResult<R> {
  /** Values of the calls that succeeded, in no particular order. */
  values: R[];
  errors: number;
  firstError?: string;
  /** From the first call's start to the last call's end. */
  seconds: number;
}

/**
 * Makes exactly `count` calls from `concurrency` loops (a fixed amount of
 * work, e.g. filling a queue) and returns what the successful ones returned.
 */
export async function measureCount<R>(
  call: (seq: number) => Promise<R>,
  options: { count: number; concurrency: number },
): Promise<CountResult<R>> {
  const { count, concurrency } = options;
  if (!(count >= 0) || !(concurrency >= 1)) {
    throw new Error("measureCount: count >= 0 and concurrency >= 1 are required");
  }
  const values: R[] = [];
  let next = 0;
  let errors = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const loop = async () => {
    while (next < count) {
      const seq = next++;
      try {
        values.push(await call(seq));
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(count, 1)) }, loop));
  return {
    values,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    seconds: (performance.now() - t0) / 1000,
  };
}

/** One call of an open-loop run that started inside the measured window. */
export interface TimedCall<R> {
  /** When the call started, in ms since the Unix epoch (fractional). */
  sentAtMs: number;
  /** What it returned. */
  value: R;
}

/** What `openLoop` found about the calls started inside the measured window. */
export interface OpenLoopResult<R> {
  calls: TimedCall<R>[];
  errors: number;
  firstError?: string;
  /** Calls started in the window per second (the achieved rate). */
  ratePerSec: number;
  /** Latency of the calls themselves (not of what they start), in ms. */
  p50Ms: number;
  p99Ms: number;
  /** Calls that could not start on time because `maxInFlight` were pending. */
  late: number;
}

/**
 * An open-loop load: starts calls at a steady `ratePerSec` whatever their
 * latency (as independent callers would), for `warmupMs` uncounted and then
 * `durationMs` counted, and waits for the last one. At most `maxInFlight`
 * calls are pending; calls due beyond that start late and are counted.
 */
export async function openLoop<R>(
  call: (seq: number) => Promise<R>,
  options: { ratePerSec: number; warmupMs: number; durationMs: number; maxInFlight?: number },
): Promise<OpenLoopResult<R>> {
  const { ratePerSec, warmupMs, durationMs, maxInFlight = 1000 } = options;
  if (!(ratePerSec > 0) || !(durationMs > 0) || !(warmupMs >= 0)) {
    throw new Error("openLoop: ratePerSec > 0, durationMs > 0 and warmupMs >= 0 are required");
  }
  const t0 = performance.now();
  const windowStart = t0 + warmupMs;
  const end = windowStart + durationMs;
  const calls: TimedCall<R>[] = [];
  const latencies: number[] = [];
  const pending = new Set<Promise<void>>();
  let seq = 0;
  let errors = 0;
  let late = 0;
  let inWindow = 0;
  let firstError: string | undefined;
  // Call k is due at t0 + k * period; every call due before `end` is made.
  const period = 1000 / ratePerSec;
  // From the options, not from `end - t0`: that difference of two clock
  // readings is off by a rounding error (250.00000000003 ms), and ceil then
  // made one call more than due.
  const total = Math.ceil(((warmupMs + durationMs) * ratePerSec) / 1000);

  const start = (due: number) => {
    const begun = performance.now();
    const counted = begun >= windowStart;
    if (counted) {
      inWindow++;
      if (begun - due > period) late++;
    }
    const sentAtMs = performance.timeOrigin + begun;
    const p = call(seq++).then(
      (value) => {
        if (!counted) return;
        calls.push({ sentAtMs, value });
        latencies.push(performance.now() - begun);
      },
      (err: unknown) => {
        if (!counted) return;
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      },
    );
    const tracked = p.finally(() => pending.delete(tracked));
    pending.add(tracked);
  };

  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const dueCount = Math.min(total, Math.floor((now - t0) / period) + 1);
      while (seq < dueCount && pending.size < maxInFlight) start(t0 + seq * period);
      if (now >= end || seq >= total) return resolve();
      setTimeout(tick, Math.max(0, t0 + seq * period - performance.now()));
    };
    tick();
  });
  await Promise.all(pending);
  const sorted = Float64Array.from(latencies).sort();
  return {
    calls,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    ratePerSec: inWindow / (durationMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    late,
  };
}
