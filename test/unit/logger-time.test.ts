import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { isoTime } from "../../src/telemetry/logger.js";

describe("isoTime()", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("writes what pino's isoTime writes, across milliseconds, seconds, days and years", () => {
    const base = Date.UTC(2026, 11, 31, 23, 59, 58, 0);
    const times = [
      0,
      1,
      9,
      10,
      99,
      100,
      999,
      1000,
      1001,
      59_999,
      60_000,
      base,
      base + 7,
      base + 42,
      base + 999,
      base + 1000,
      base + 1999,
      base + 2000,
      base + 2001,
      Date.UTC(2024, 1, 29, 12, 0, 0, 5),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
    ];
    // Repeated and out of order too: the cached second must follow the clock either way.
    for (const now of [...times, ...times.slice().reverse(), base + 5, base + 5]) {
      vi.spyOn(Date, "now").mockReturnValue(now);
      expect(isoTime()).toBe(pino.stdTimeFunctions.isoTime());
    }
  });
});
