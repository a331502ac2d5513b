/**
 * The worker's contexts without AsyncLocalStorage: SyncContextManager keeps a
 * context for the synchronous extent of `with` only, and job-traces.ts hands
 * a running attempt's context to the lines logged for it after an await.
 */
import { context, ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { afterAll, describe, expect, it } from "vitest";
import {
  forgetJobTrace,
  inJobTrace,
  keepJobTrace,
  setKeepJobTraces,
} from "../../src/telemetry/job-traces.js";
import { SyncContextManager } from "../../src/telemetry/sync-context-manager.js";

const span = trace.wrapSpanContext({
  traceId: "5af92f3577b34da6a3ce929d0e0e4737",
  spanId: "00f067aa0ba902b7",
  traceFlags: 0,
});
const jobContext = trace.setSpan(ROOT_CONTEXT, span);

describe("SyncContextManager", () => {
  it("keeps a context while `with` runs synchronously, not after an await, and restores the outer one", async () => {
    const m = new SyncContextManager();
    const inner = ROOT_CONTEXT.setValue(Symbol("k"), 1);
    let afterAwait: unknown;
    const done = m.with(jobContext, async () => {
      expect(m.active()).toBe(jobContext);
      expect(m.with(inner, () => m.active())).toBe(inner);
      expect(m.active()).toBe(jobContext);
      await null;
      afterAwait = m.active();
    });
    expect(m.active()).toBe(ROOT_CONTEXT);
    await done;
    expect(afterAwait).toBe(ROOT_CONTEXT);
    expect(() =>
      m.with(jobContext, () => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(m.active()).toBe(ROOT_CONTEXT);
    const bound = m.bind(jobContext, (x: number) => [m.active(), x] as const);
    expect(bound(7)).toEqual([jobContext, 7]);
    const notAFunction = { a: 1 };
    expect(m.bind(jobContext, notAFunction)).toBe(notAFunction);
  });
});

describe("job traces", () => {
  const manager = new SyncContextManager();
  context.setGlobalContextManager(manager);
  afterAll(() => {
    setKeepJobTraces(false);
    context.disable();
  });

  it("gives the lines logged for a running attempt after an await its context, until it is forgotten", async () => {
    setKeepJobTraces(true);
    keepJobTrace("job-1", jobContext);
    await null;
    expect(trace.getActiveSpan()).toBeUndefined();
    expect(inJobTrace("job-1", () => trace.getActiveSpan())).toBe(span);
    // Another job's lines, and lines after the attempt ended, get none.
    expect(inJobTrace("job-2", () => trace.getActiveSpan())).toBeUndefined();
    forgetJobTrace("job-1");
    expect(inJobTrace("job-1", () => trace.getActiveSpan())).toBeUndefined();
  });

  it("keeps nothing when the context manager follows awaits", () => {
    setKeepJobTraces(false);
    keepJobTrace("job-3", jobContext);
    expect(inJobTrace("job-3", () => trace.getActiveSpan())).toBeUndefined();
    expect(inJobTrace("job-3", () => 42)).toBe(42);
  });
});
