/**
 * The chaos suite's judges (scripts/chaos): a job's event log against the
 * state machine, and a watcher's events against the log. A judge that passes
 * everything would make every chaos run green.
 */
import { describe, expect, it } from "vitest";
import { checkEventLog, type LoggedEvent } from "../../scripts/chaos/event-log-check.js";
import { watcherProblem } from "../../scripts/chaos/invariants.js";

let seq = 0;
/** An event with the next stream id. */
function ev(type: string, state: string, attempt = 0, phase = ""): LoggedEvent {
  seq += 1;
  return { id: `1000-${seq}`, type, state, attempt, phase } as LoggedEvent;
}

describe("checkEventLog()", () => {
  it("accepts a run with a retry, a stall re-run, and a RetryJob re-run", () => {
    const log = [
      ev("queued", "queued"),
      ev("started", "running", 1),
      ev("progress", "running", 1),
      ev("retrying", "retrying", 1),
      ev("started", "running", 2),
      ev("started", "running", 2),
      ev("failed", "failed", 2),
      ev("queued", "queued", 0, "retry"),
      ev("started", "running", 1),
      ev("succeeded", "succeeded", 1),
    ];
    expect(checkEventLog(log, "succeeded")).toEqual({
      runs: 2,
      endedRuns: 2,
      terminalEvents: 2,
      problems: [],
    });
  });

  it("refuses an event after the terminal one", () => {
    const log = [
      ev("queued", "queued"),
      ev("started", "running", 1),
      ev("succeeded", "succeeded", 1),
      ev("progress", "running", 1),
    ];
    expect(checkEventLog(log).problems).toEqual([
      expect.stringContaining("no transition leads there from succeeded"),
    ]);
  });

  it("refuses two terminal events in one run", () => {
    const log = [
      ev("queued", "queued"),
      ev("started", "running", 1),
      ev("cancelled", "cancelled", 1),
      ev("failed", "failed", 1),
    ];
    const problems = checkEventLog(log).problems;
    expect(problems).toContainEqual(expect.stringContaining("run 1 had 2 terminal events"));
  });

  it("refuses a write of an attempt after a newer attempt started", () => {
    const log = [
      ev("queued", "queued"),
      ev("started", "running", 1),
      ev("started", "running", 2),
      ev("progress", "running", 1),
    ];
    expect(checkEventLog(log).problems).toEqual([
      expect.stringContaining("written by attempt 1 while attempt 2 runs"),
    ]);
  });

  it("accepts a FAILED of a later attempt that never recorded its start (BullMQ's count)", () => {
    const log = [ev("queued", "queued"), ev("started", "running", 1), ev("failed", "failed", 2)];
    expect(checkEventLog(log).problems).toEqual([]);
  });

  it("refuses a log that does not start QUEUED, ids out of order, and a record that disagrees", () => {
    const queued = ev("queued", "queued");
    const started = ev("started", "running", 1);
    const problems = checkEventLog([started, queued], "running").problems;
    expect(problems).toContainEqual(expect.stringContaining("starts with started"));
    expect(problems).toContainEqual(expect.stringContaining("id not after"));
    expect(problems).toContainEqual(expect.stringContaining("the record says running"));
  });
});

describe("watcherProblem()", () => {
  const log = [
    ev("queued", "queued"),
    ev("started", "running", 1),
    ev("succeeded", "succeeded", 1),
  ];
  const seen = (events: LoggedEvent[]) => events.map((e) => ({ id: e.id, type: e.type }));
  const ended = { live: false, expired: false };

  it("accepts every event once, in order, ending with the terminal one", () => {
    expect(watcherProblem({ seen: seen(log), ended: true, notFound: false }, log, ended)).toBe(
      undefined,
    );
  });

  it("names a repeated, a skipped and a missing ending", () => {
    const [q, s, done] = log as [LoggedEvent, LoggedEvent, LoggedEvent];
    expect(
      watcherProblem({ seen: seen([q, s, s, done]), ended: true, notFound: false }, log, ended),
    ).toMatch(/again/);
    expect(
      watcherProblem({ seen: seen([q, done]), ended: true, notFound: false }, log, ended),
    ).toMatch(/the log's is/);
    expect(
      watcherProblem({ seen: seen([q, s]), ended: false, notFound: false }, log, ended),
    ).toMatch(/did not end/);
    expect(
      watcherProblem({ seen: seen([q, s]), ended: true, notFound: false }, log, ended),
    ).toMatch(/not a terminal event/);
  });

  it("accepts NOT_FOUND only for a job that expired", () => {
    const w = { seen: [], ended: false, notFound: true };
    expect(watcherProblem(w, log, { live: false, expired: true })).toBe(undefined);
    expect(watcherProblem(w, log, ended)).toMatch(/NOT_FOUND/);
  });
});
