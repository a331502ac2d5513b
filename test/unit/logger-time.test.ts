/**
 * The logger's timestamp: pino's isoTime text, made once per millisecond
 * (lines of the same millisecond share it; the next millisecond gets its own).
 */
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createLogger, isoTime } from "../../src/telemetry/logger.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("the logger's time", () => {
  it("is pino's isoTime, millisecond by millisecond", () => {
    vi.useFakeTimers();
    for (const at of [Date.UTC(2026, 11, 3, 14, 59, 59, 999), Date.UTC(2026, 11, 3, 15, 0, 0, 0)]) {
      vi.setSystemTime(at);
      expect(isoTime()).toBe(pino.stdTimeFunctions.isoTime());
      expect(isoTime()).toBe(pino.stdTimeFunctions.isoTime());
    }
    vi.setSystemTime(Date.UTC(2026, 11, 3, 15, 0, 0, 1));
    expect(isoTime()).toBe(',"time":"2026-12-03T15:00:00.001Z"');
  });

  it("is the time field of every line", () => {
    vi.useFakeTimers();
    vi.setSystemTime(Date.UTC(2026, 11, 3, 15, 0, 0, 42));
    const lines: string[] = [];
    const logger = createLogger(
      "info",
      {},
      { destination: { write: (l: string) => lines.push(l) } },
    );
    logger.info("one");
    vi.setSystemTime(Date.UTC(2026, 11, 3, 15, 0, 0, 43));
    logger.info("two");
    expect(lines.map((l) => JSON.parse(l).time)).toEqual([
      "2026-12-03T15:00:00.042Z",
      "2026-12-03T15:00:00.043Z",
    ]);
  });
});
