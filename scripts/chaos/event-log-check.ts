/**
 * Checks one job's event log against the job state machine
 * (src/domain/job-transitions.ts): pure, so a unit test pins it down.
 *
 * A valid log starts with QUEUED; each later event is the event of some
 * transition allowed from the state the previous event left the job in; ids
 * increase; a run (from the submit, or from a RetryJob re-queue) holds
 * exactly one terminal event, its last; and every event of an attempt
 * (progress, outcome) belongs to the attempt started last in its run, so a
 * fenced attempt left nothing behind.
 */
import { type JobEventView, type JobState, terminalEventTypes } from "../../src/domain/job.js";
import { type AppliedTransitionName, jobTransitions } from "../../src/domain/job-transitions.js";
import { compareStreamIds } from "../../src/events/event-codec.js";

/** The event fields the check reads. */
export type LoggedEvent = Pick<JobEventView, "id" | "type" | "state" | "attempt" | "phase">;

/** What one log holds, and what is wrong with it. */
export interface LogCheck {
  /** Runs in the log: the first one plus one per RetryJob re-queue. */
  runs: number;
  /** Runs that ended (their terminal event is logged). */
  endedRuns: number;
  /** Terminal events in the log. */
  terminalEvents: number;
  /** Each problem as a sentence naming the event; empty when the log is valid. */
  problems: string[];
}

const applied = Object.keys(jobTransitions).filter(
  (n) => n !== "submitted",
) as AppliedTransitionName[];

/** The transitions whose event `e` can be, coming from `from`. */
function transitionsOf(e: LoggedEvent, from: JobState): AppliedTransitionName[] {
  return applied.filter((name) => {
    const t = jobTransitions[name];
    return t.event === e.type && t.to === e.state && t.from.includes(from);
  });
}

/** Checks `events` (in log order). `recordState`, when given, must be the last event's state. */
export function checkEventLog(events: readonly LoggedEvent[], recordState?: JobState): LogCheck {
  const problems: string[] = [];
  let runs = 0;
  let endedRuns = 0;
  let terminalEvents = 0;
  const first = events[0];
  if (first === undefined) return { runs, endedRuns, terminalEvents, problems: ["empty log"] };
  if (first.type !== "queued" || first.state !== "queued")
    problems.push(`${first.id}: the log starts with ${first.type}/${first.state}, not queued`);
  runs = 1;
  let state: JobState = first.state;
  let runTerminals = 0;
  // The attempt started last in this run (undefined: none since the run or a recovery began).
  let attempt: number | undefined;
  let prev = first;
  for (const e of events.slice(1)) {
    const at = `${e.id} (${e.type}/${e.state}, attempt ${e.attempt})`;
    if (compareStreamIds(prev.id, e.id) >= 0) problems.push(`${at}: id not after ${prev.id}`);
    const ways = transitionsOf(e, state);
    if (ways.length === 0) problems.push(`${at}: no transition leads there from ${state}`);
    if (ways.includes("requeued") && ways.length === 1) {
      if (runTerminals !== 1)
        problems.push(`${at}: run ${runs} had ${runTerminals} terminal events`);
      runs += 1;
      runTerminals = 0;
      attempt = undefined;
    } else if (e.type === "started") {
      attempt = e.attempt;
    } else if (e.type === "queued" && e.phase === "recovered") {
      attempt = undefined;
    } else if (
      e.type !== "queued" &&
      e.attempt > 0 &&
      attempt !== undefined &&
      // A FAILED may name a later attempt than the last STARTED: BullMQ's
      // count, when attempts failed before they could record STARTED (Redis
      // away) and BullMQ gave up (report-worker.ts markFailed). Only an
      // earlier attempt's write is a fencing failure.
      (e.type === "failed" ? e.attempt < attempt : e.attempt !== attempt)
    ) {
      problems.push(`${at}: written by attempt ${e.attempt} while attempt ${attempt} runs`);
    }
    if (terminalEventTypes.has(e.type)) {
      terminalEvents += 1;
      runTerminals += 1;
      if (runTerminals === 1) endedRuns += 1;
    }
    state = e.state;
    prev = e;
  }
  if (runTerminals > 1) problems.push(`run ${runs} had ${runTerminals} terminal events`);
  if (recordState !== undefined && recordState !== state)
    problems.push(`the record says ${recordState} but the log ends ${state}`);
  return { runs, endedRuns, terminalEvents, problems };
}
