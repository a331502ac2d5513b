/**
 * The trace context of each attempt running in this worker process, by job
 * id, for the log lines written on its behalf after an await. Kept only when
 * the process's context manager does not follow awaits (SyncContextManager:
 * the worker with no span recorded); with AsyncLocalStorage the attempt's
 * context follows its awaits by itself and nothing is kept here.
 *
 * With it, a line logged through `inJobTrace(jobId, ...)` while the job's
 * attempt runs carries the attempt's trace_id and span_id (BullMQ's consumer
 * span), as AsyncLocalStorage gives them to the lines of the attempt's code.
 */
import { type Context, context } from "@opentelemetry/api";

let kept = false;
const traces = new Map<string, Context>();

/** Set by startTelemetry: true when the context manager does not follow awaits. */
export function setKeepJobTraces(value: boolean): void {
  kept = value;
  if (!value) traces.clear();
}

/** Keeps `ctx` (the attempt's, with its consumer span) as job `jobId`'s, until `forgetJobTrace`. */
export function keepJobTrace(jobId: string, ctx: Context): void {
  if (kept) traces.set(jobId, ctx);
}

/** Forgets job `jobId`'s context: its attempt has ended here. */
export function forgetJobTrace(jobId: string): void {
  if (kept) traces.delete(jobId);
}

/** Runs `fn` (a log line about job `jobId`) in the context kept for the job's running attempt, if any. */
export function inJobTrace<T>(jobId: string, fn: () => T): T {
  const ctx = kept ? traces.get(jobId) : undefined;
  return ctx === undefined ? fn() : context.with(ctx, fn);
}
