/**
 * Pieces of the report generators tests hand to `startTestApp()`: a small
 * report to return, a gate a generator can wait on, and a generator that
 * records every call.
 */
import type {
  ProgressReporter,
  ReportGenerator,
  ReportInput,
  ReportOutput,
} from "../../src/worker/generator.js";

/** A small CSV report, for generators whose output does not matter to the test. */
export const csvOutput: ReportOutput = {
  fileName: "r.csv",
  contentType: "text/csv",
  content: "day,n\n",
};

/** A promise and the function that resolves it. */
export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

/** A gate: `promise` stays pending until the test calls `resolve()`. */
export function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A generator running `body`, recording the attempt number of every call in `calls`. */
export function scripted(
  body: (
    input: ReportInput,
    progress: ProgressReporter,
    signal: AbortSignal,
  ) => Promise<ReportOutput>,
): ReportGenerator & { calls: number[] } {
  const calls: number[] = [];
  return {
    calls,
    generate(input, progress, signal) {
      calls.push(input.attempt);
      return body(input, progress, signal);
    },
  };
}
