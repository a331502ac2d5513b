/**
 * The job state-machine table: each row's columns agree with what its
 * `derive` produces, and the fencing slot is where the rows say it is.
 */
import { describe, expect, it } from "vitest";
import { jobStates, liveStates, terminalStates } from "../../src/domain/job.js";
import {
  jobTransitions,
  type TransitionInputs,
  type TransitionName,
} from "../../src/domain/job-transitions.js";
import { encodeRecordUpdate, recordField } from "../../src/queue/job-record.js";

const artifact = { downloadPath: "/v1/artifacts/j1/r.csv", contentType: "text/csv", sizeBytes: 7 };
const attempt = { attempt: 2, at: 1_000, token: "tok-A", lockToken: "lock-A" };
const where = { progress: 40, phase: "fetch-data" };

/** One input per transition. */
const samples: { [N in TransitionName]: TransitionInputs[N] } = {
  submitted: { at: 1_000 },
  started: { ...attempt, maxAttempts: 3 },
  progress: { ...attempt, ...where },
  succeeded: { ...attempt, startedAt: 400, artifact },
  retrying: { ...attempt, ...where, reason: "hiccup", nextAttemptAt: 1_250 },
  failed: { ...attempt, ...where, reason: "broken" },
  cancelled: { ...attempt, ...where, reason: "not needed" },
  released: attempt,
  throttled: { ...attempt, reason: "slow down", retryAfterMs: 300 },
  abandoned: { attempt: 1, at: 1_000, ...where, reason: "deadline exceeded" },
  cancelledWaiting: { attempt: 0, at: 1_000, progress: 0, phase: "", reason: "not needed" },
  requeued: { at: 1_000, traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
  retryUnscheduled: { at: 1_000 },
  recovered: { at: 1_000, reason: "BullMQ lost the job", recoveries: 1 },
};

const names = Object.keys(jobTransitions) as TransitionName[];

/** Derives a row's output from its sample (the table is indexed generically). */
function derive(name: TransitionName) {
  const row = jobTransitions[name] as {
    derive(input: unknown): ReturnType<(typeof jobTransitions)[TransitionName]["derive"]>;
  };
  return row.derive(samples[name]);
}

describe("jobTransitions", () => {
  it("derives events whose type and state are the row's", () => {
    for (const name of names) {
      const row = jobTransitions[name];
      const { event, record } = derive(name);
      expect(event.type, name).toBe(row.event);
      expect(event.state, name).toBe(row.to);
      expect(event.time, name).toBe(samples[name].at);
      if (record.state !== undefined) expect(record.state, name).toBe(row.to);
      // Every row but progress and submitted writes the state it leads to.
      if (name !== "progress" && name !== "submitted") expect(record.state, name).toBe(row.to);
    }
  });

  it("leaves only from states that exist, and finishes only in terminal states with a retention", () => {
    for (const name of names) {
      const row = jobTransitions[name];
      for (const s of row.from) expect(jobStates, name).toContain(s);
      if (row.finishes) expect(terminalStates.has(row.to), name).toBe(true);
      if (terminalStates.has(row.to)) {
        expect(["expire-succeeded", "expire-failed"], name).toContain(row.ttl);
        expect(row.finishes || name === "retryUnscheduled", name).toBe(true);
      }
      // Leaving a terminal state makes the job live again: its keys must not expire.
      if (row.from.some((s) => terminalStates.has(s))) expect(row.ttl, name).toBe("persist");
    }
    expect(jobTransitions.succeeded.ttl).toBe("expire-succeeded");
  });

  it("records on an abandoned job the attempts its FAILED event names", () => {
    const { event, record } = derive("abandoned");
    expect(event.attempt).toBe(1);
    expect(record.attemptsMade).toBe(1);
  });

  it("fences every write of an attempt after its STARTED, which stores the attempt's token", () => {
    const attemptWrites = ["progress", "succeeded", "retrying", "failed", "cancelled"];
    const fenced = names.filter((n) => jobTransitions[n].fence === "checks");
    expect(fenced.sort()).toEqual([...attemptWrites, "released", "throttled"].sort());
    expect(names.filter((n) => jobTransitions[n].fence === "sets")).toEqual(["started"]);
    expect(derive("started").record.attemptToken).toBe("tok-A");
    // Fenced writes can only happen while the attempt's job runs (or, for FAILED, is live).
    for (const name of fenced) {
      for (const s of jobTransitions[name].from) expect(liveStates, name).toContain(s);
      expect(derive(name).record.attemptToken, name).toBeUndefined();
    }
    // A re-run starts with no attempt holding the job.
    expect(derive("requeued").record.attemptToken).toBe("");
  });

  it("puts the attempt's position in the event and moves released or throttled jobs back one attempt", () => {
    expect(derive("progress")).toEqual({
      event: { type: "progress", state: "running", ...where, attempt: 2, time: 1_000 },
      record: where,
    });
    expect(derive("released").record).toEqual({
      state: "queued",
      progress: 0,
      phase: "released",
      attemptsMade: 1,
    });
    expect(derive("throttled").event.error).toBe("slow down");
    expect(derive("cancelledWaiting").record.cancelRequested).toBe("not needed");
  });

  it("writes only record fields the record has", () => {
    const hashFields = new Set<string>(Object.values(recordField));
    for (const name of names) {
      const pairs = encodeRecordUpdate(derive(name).record);
      for (let i = 0; i < pairs.length; i += 2) expect(hashFields, name).toContain(pairs[i]);
    }
    // RetryJob clears what the earlier run left.
    const cleared = encodeRecordUpdate(derive("requeued").record);
    for (const f of [recordField.finishedAt, recordField.startedAt, recordField.resultPath]) {
      expect(cleared[cleared.indexOf(f) + 1], f).toBe("");
    }
  });

  it("names the log lines' extra fields as today's log lines do", () => {
    const job = { id: "j1", tenant: "t", reportType: "weekly" as const, createdAt: 100 };
    const fields = (name: TransitionName) =>
      (
        jobTransitions[name] as {
          logFields?: (i: unknown, j: typeof job) => Record<string, unknown>;
        }
      ).logFields?.(samples[name], job);
    expect(fields("started")).toEqual({ queued_ms: 900 });
    expect(fields("succeeded")).toEqual({ duration_ms: 600, size_bytes: 7 });
    expect(fields("retrying")).toEqual({ phase: "fetch-data", reason: "hiccup", delay_ms: 250 });
    expect(fields("throttled")).toEqual({ phase: "throttled", delay_ms: 300 });
    expect(fields("released")).toEqual({ phase: "released" });
    for (const silent of ["progress", "cancelledWaiting", "requeued", "retryUnscheduled"] as const)
      expect(fields(silent), silent).toBeUndefined();
  });
});
