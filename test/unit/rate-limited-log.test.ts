import { Writable } from "node:stream";
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createRateLimitedLog } from "../../src/api/server-metrics.js";

/** A debug pino logger whose lines are collected, parsed. */
function collectingLogger(level = "debug") {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

describe("createRateLimitedLog()", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("logs the first event at once, then one line per interval with how many were left out", () => {
    vi.useFakeTimers();
    const { logger, lines } = collectingLogger();
    const log = createRateLimitedLog(logger, 10_000);
    log({ reason: "a" }, "refused");
    for (let i = 0; i < 5; i++) log({ reason: "b" }, "refused");
    vi.advanceTimersByTime(10_000);
    log({ reason: "c" }, "refused");
    log({ reason: "d" }, "refused");
    expect(lines.map((l) => [l.reason, l.suppressed, l.msg])).toEqual([
      ["a", undefined, "refused"],
      ["c", 5, "refused"],
    ]);
  });

  it("logs nothing and counts nothing when debug is off", () => {
    const { logger, lines } = collectingLogger("info");
    const log = createRateLimitedLog(logger, 10_000);
    for (let i = 0; i < 3; i++) log({}, "refused");
    logger.level = "debug";
    log({}, "refused");
    expect(lines).toHaveLength(1);
    expect(lines[0]?.suppressed).toBeUndefined();
  });
});
