import { describe, expect, it } from "vitest";
import { backoffDelay } from "../../src/worker/processor.js";

describe("backoffDelay()", () => {
  it("doubles with each attempt, from the base", () => {
    const full = () => 1; // jitter factor 1: the full delay
    expect([1, 2, 3, 4, 5, 6].map((a) => backoffDelay(1000, a, full))).toEqual([
      1000, 2000, 4000, 8000, 16000, 32000,
    ]);
  });

  it("jitters within [0.5, 1] of the full delay", () => {
    expect(backoffDelay(1000, 3, () => 0)).toBe(2000);
    expect(backoffDelay(1000, 3, () => 0.5)).toBe(3000);
    expect(backoffDelay(1000, 3, () => 1)).toBe(4000);
    for (let attempt = 1; attempt <= 10; attempt++) {
      const full = 250 * 2 ** (attempt - 1);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(250, attempt, Math.random);
        expect(d).toBeGreaterThanOrEqual(full / 2);
        expect(d).toBeLessThanOrEqual(full);
      }
    }
  });

  it("spreads jobs that fail together", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(1000, 4, Math.random)));
    expect(delays.size).toBeGreaterThan(10);
  });

  it("returns whole milliseconds", () => {
    expect(Number.isInteger(backoffDelay(7, 1, () => 0.123))).toBe(true);
  });

  it("stops growing after 2^20 times the base, so it never overflows", () => {
    const full = () => 1;
    expect(backoffDelay(1, 21, full)).toBe(2 ** 20);
    expect(backoffDelay(1, 1000, full)).toBe(2 ** 20);
    expect(Number.isFinite(backoffDelay(1000, 10_000, full))).toBe(true);
  });
});
