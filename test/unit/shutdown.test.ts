import pino from "pino";
import { describe, expect, it } from "vitest";
import { createShutdown } from "../../src/shutdown.js";

/** A shutdown whose warnings are collected as `[msg, step?, err?]`. */
function shutdownWithLog(options: { warnAfterMs?: number } = {}) {
  const warnings: Array<{ msg: string; step?: string; err?: string }> = [];
  const logger = pino(
    { level: "warn" },
    { write: (line: string) => warnings.push(JSON.parse(line)) },
  );
  return { shutdown: createShutdown({ logger, ...options }), warnings };
}

describe("createShutdown()", () => {
  it("runs the steps last registered first", async () => {
    const { shutdown, warnings } = shutdownWithLog();
    const ran: string[] = [];
    shutdown.add("redis", () => {
      ran.push("redis");
    });
    shutdown.add("workers", async () => {
      ran.push("workers");
    });
    shutdown.add("server", () => {
      ran.push("server");
    });
    await shutdown.close();
    expect(ran).toEqual(["server", "workers", "redis"]);
    expect(warnings).toEqual([]);
  });

  it("aborts its signal before the first step runs", async () => {
    const { shutdown } = shutdownWithLog();
    const seen: boolean[] = [];
    shutdown.add("server", () => {
      seen.push(shutdown.signal.aborted, shutdown.closing);
    });
    expect(shutdown.signal.aborted).toBe(false);
    expect(shutdown.closing).toBe(false);
    await shutdown.close();
    expect(seen).toEqual([true, true]);
  });

  it("runs every later step when one throws or rejects, and logs the failed one by name", async () => {
    const { shutdown, warnings } = shutdownWithLog();
    const ran: string[] = [];
    shutdown.add("redis", () => {
      ran.push("redis");
    });
    shutdown.add("queues", async () => {
      throw new Error("queue gone");
    });
    shutdown.add("workers", () => {
      throw new Error("worker stuck");
    });
    shutdown.add("server", () => {
      ran.push("server");
    });
    await expect(shutdown.close()).resolves.toBeUndefined();
    expect(ran).toEqual(["server", "redis"]);
    expect(warnings.map(({ msg, step, err }) => [msg, step, err])).toEqual([
      ["shutdown step failed", "workers", "worker stuck"],
      ["shutdown step failed", "queues", "queue gone"],
    ]);
  });

  it("cuts a hung step off at its deadline and moves on", async () => {
    const { shutdown, warnings } = shutdownWithLog();
    const ran: string[] = [];
    shutdown.add("redis", () => {
      ran.push("redis");
    });
    // Never settles.
    shutdown.add("workers", () => new Promise<void>(() => {}), 30);
    const began = performance.now();
    await shutdown.close();
    expect(performance.now() - began).toBeGreaterThanOrEqual(25);
    expect(ran).toEqual(["redis"]);
    expect(warnings.map(({ msg, step, err }) => [msg, step, err])).toEqual([
      ["shutdown step failed", "workers", "timed out after 30 ms"],
    ]);
  });

  it("warns once when the whole shutdown takes longer than warnAfterMs", async () => {
    const { shutdown, warnings } = shutdownWithLog({ warnAfterMs: 10 });
    shutdown.add("workers", () => new Promise<void>(() => {}), 60);
    await shutdown.close();
    expect(warnings.map((w) => w.msg)).toEqual(["shutdown is taking long", "shutdown step failed"]);
  });

  it("is idempotent: every call returns the first call's promise, and each step runs once", async () => {
    const { shutdown } = shutdownWithLog();
    let runs = 0;
    shutdown.add("server", async () => {
      runs++;
    });
    const first = shutdown.close();
    const second = shutdown.close();
    expect(second).toBe(first);
    await first;
    await shutdown.close();
    expect(runs).toBe(1);
  });

  it("refuses steps once closing has begun (they would never run)", async () => {
    const { shutdown } = shutdownWithLog();
    await shutdown.close();
    expect(() => shutdown.add("late", () => {})).toThrow(/shutdown has begun: cannot add "late"/);
  });
});
