/**
 * The job state machine: every way a job's state changes, as one table.
 *
 * Each transition takes one input object and derives from it both the event
 * it appends to the job's log and the record fields it writes, so the two
 * cannot drift apart. Beside `derive`, the table says which states the job
 * may leave from (`from`; the write is refused otherwise), what happens to
 * the job's retention (`ttl`), whether it is a write of an attempt
 * (`fence`), whether it ends the job for the enqueue-to-finish metric
 * (`finishes`) and what its log line adds (`logFields`; no line without it).
 * queue/transition-applier.ts applies a transition to Redis in one script;
 * this module is pure.
 *
 * Fencing. An attempt runs under the queue's lock on its job (BullMQ's lock
 * key holds the lock token of the fetch that runs it, renewed while the
 * worker is alive) and gets a token of its own. Every write of an attempt
 * (fence "sets" or "checks") carries both and is refused unless the queue's
 * lock still holds the lock token: once the lock expired (a frozen or
 * partitioned worker), the attempt changes nothing, even before another
 * attempt started. `started` also stores the attempt's token in the record;
 * every later write of the attempt (fence "checks") is refused unless the
 * record still holds it, so a newer attempt's job is never touched, whatever
 * the queue's lock says. Transitions made outside an attempt (CancelJob,
 * RetryJob, a job the queue gave up on) are not fenced; `requeued` clears
 * the token.
 */
import type { JobEventType, JobEventView, JobState, JobView, ReportArtifact } from "./job.js";
import { liveStates } from "./job.js";

/** Record fields a transition writes (names as in JobView); `null` clears a field. */
export interface RecordUpdate {
  state?: JobState;
  progress?: number;
  phase?: string;
  attemptsMade?: number;
  maxAttempts?: number;
  failureReason?: string;
  startedAt?: number | null;
  finishedAt?: number | null;
  result?: ReportArtifact | null;
  cancelRequested?: string;
  traceparent?: string;
  requeuedAt?: number;
  /** The fencing token of the job's current attempt ("" : none). */
  attemptToken?: string;
  /** How often the reconciler queued the job again. */
  recoveries?: number;
}

/** The event a transition appends; its id and trace id are the log's to add. */
export type TransitionEvent = Omit<JobEventView, "id" | "traceId">;

/**
 * What a transition does to the retention of the job's record and log:
 * nothing, expire them after the succeeded or the failed retention
 * (RETENTION_SUCCEEDED_MS / RETENTION_FAILED_MS), or keep them (a live job).
 */
export type TtlPolicy = "leave" | "expire-succeeded" | "expire-failed" | "persist";

/**
 * Whether a transition is a write of an attempt: "sets" stores the attempt's
 * token (STARTED), "checks" is refused unless the record holds the token it
 * carries; both are refused unless the queue's lock holds the attempt's lock
 * token. "none" is not an attempt's write.
 */
export type FencePolicy = "none" | "sets" | "checks";

/** The job a transition is applied to, as its metric and log line need it. */
export type TransitionSubject = Pick<
  JobView,
  "id" | "tenant" | "reportType" | "createdAt" | "requeuedAt" | "idempotencyKeyDigest"
>;

/** One row of the table. */
export interface Transition<I> {
  /** The states the job must be in; any other state refuses the transition. */
  readonly from: readonly JobState[];
  /** The job's state afterwards. */
  readonly to: JobState;
  /** The type of the event appended. */
  readonly event: JobEventType;
  readonly ttl: TtlPolicy;
  readonly fence: FencePolicy;
  /** Ends the job: records its enqueue-to-finish latency and outcome (`to`). */
  readonly finishes: boolean;
  /** The fields the transition's log line ("job <to>") adds; no log line when absent. */
  readonly logFields?: (input: I, job: TransitionSubject) => Record<string, unknown>;
  /** The event and record fields of one application. */
  derive(input: I): { event: TransitionEvent; record: RecordUpdate };
}

/** What every write of an attempt carries. */
export interface AttemptWrite {
  /** The attempt's number, from 1. */
  attempt: number;
  /** When the transition happens (ms). */
  at: number;
  /** The attempt's fencing token. */
  token: string;
  /** The queue's lock token of the attempt (BullMQ's, for the fetch that runs it). */
  lockToken: string;
}

/** Where an attempt was when it stopped. */
export interface Position {
  progress: number;
  phase: string;
}

/** The input of each transition, by name. */
export interface TransitionInputs {
  /** A new job was queued (the submit script writes it with the record). */
  submitted: { at: number };
  /** An attempt began. */
  started: AttemptWrite & { maxAttempts: number };
  /** The generator reported progress. */
  progress: AttemptWrite & Position;
  /** The report is stored: the job is done. */
  succeeded: AttemptWrite & { startedAt: number; artifact: ReportArtifact };
  /** The attempt failed; another follows at `nextAttemptAt`. */
  retrying: AttemptWrite & Position & { reason: string; nextAttemptAt: number };
  /** The attempt failed for good: last attempt, permanent error or deadline. */
  failed: AttemptWrite & Position & { reason: string };
  /** The attempt stopped on a cancel request. */
  cancelled: AttemptWrite & Position & { reason: string };
  /** The worker is stopping: the attempt is given back to the queue, unused. */
  released: AttemptWrite;
  /** The generator asked to slow down: the job waits, the attempt unused. */
  throttled: AttemptWrite & { reason: string; retryAfterMs: number };
  /** The job failed outside an attempt: deadline passed before it ran, or the queue gave up on it. */
  abandoned: Position & { attempt: number; at: number; reason: string };
  /** CancelJob of a job that is not running (queued or waiting out a backoff). */
  cancelledWaiting: Position & { attempt: number; at: number; reason: string };
  /** RetryJob re-queued a FAILED job: a new run under a new trace. */
  requeued: { at: number; traceparent: string };
  /** RetryJob could not queue the re-run: the job is FAILED again. */
  retryUnscheduled: { at: number };
  /**
   * The reconciler queued a live job again whose BullMQ job was lost (or
   * finished without recording an outcome): a new run, fresh attempts; any
   * attempt still going is fenced off. `recoveries` counts them.
   */
  recovered: { at: number; reason: string; recoveries: number };
}

/** A transition's name. */
export type TransitionName = keyof TransitionInputs;

/** Transitions applied to an existing job (all but `submitted`, which creates it). */
export type AppliedTransitionName = Exclude<TransitionName, "submitted">;

/** The progress and phase of a job whose attempt just started. */
export const attemptStart: Readonly<Position> = { progress: 5, phase: "started" };

/** The failure reason when RetryJob could not queue the re-run. */
export const retryUnscheduledReason = "retry could not be scheduled";

/** The table. */
export const jobTransitions: { readonly [N in TransitionName]: Transition<TransitionInputs[N]> } = {
  submitted: {
    from: [],
    to: "queued",
    event: "queued",
    ttl: "leave",
    fence: "none",
    finishes: false,
    // The submit script writes the whole new record (job-record.ts encodeNewRecord).
    derive: ({ at }) => ({
      event: { type: "queued", state: "queued", progress: 0, phase: "", attempt: 0, time: at },
      record: {},
    }),
  },
  started: {
    from: liveStates,
    to: "running",
    event: "started",
    ttl: "leave",
    fence: "sets",
    finishes: false,
    logFields: ({ at }, job) => ({ queued_ms: at - (job.requeuedAt ?? job.createdAt) }),
    derive: ({ attempt, at, token, maxAttempts }) => ({
      event: { type: "started", state: "running", ...attemptStart, attempt, time: at },
      record: {
        state: "running",
        ...attemptStart,
        attemptsMade: attempt,
        maxAttempts,
        startedAt: at,
        failureReason: "",
        attemptToken: token,
      },
    }),
  },
  progress: {
    from: ["running"],
    to: "running",
    event: "progress",
    ttl: "leave",
    fence: "checks",
    finishes: false,
    derive: ({ attempt, at, progress, phase }) => ({
      event: { type: "progress", state: "running", progress, phase, attempt, time: at },
      record: { progress, phase },
    }),
  },
  succeeded: {
    from: ["running"],
    to: "succeeded",
    event: "succeeded",
    ttl: "expire-succeeded",
    fence: "checks",
    finishes: true,
    logFields: ({ at, startedAt, artifact }) => ({
      duration_ms: at - startedAt,
      size_bytes: artifact.sizeBytes,
    }),
    derive: ({ attempt, at, artifact }) => ({
      event: {
        type: "succeeded",
        state: "succeeded",
        progress: 100,
        phase: "completed",
        attempt,
        time: at,
        result: artifact,
      },
      record: {
        state: "succeeded",
        progress: 100,
        phase: "completed",
        finishedAt: at,
        failureReason: "",
        result: artifact,
      },
    }),
  },
  retrying: {
    from: ["running"],
    to: "retrying",
    event: "retrying",
    ttl: "leave",
    fence: "checks",
    finishes: false,
    logFields: ({ phase, reason, at, nextAttemptAt }) => ({
      phase,
      reason,
      delay_ms: nextAttemptAt - at,
    }),
    derive: ({ attempt, at, progress, phase, reason, nextAttemptAt }) => ({
      event: {
        type: "retrying",
        state: "retrying",
        progress,
        phase,
        attempt,
        time: at,
        error: reason,
        nextAttemptAt,
      },
      record: { state: "retrying", failureReason: reason },
    }),
  },
  failed: {
    from: liveStates,
    to: "failed",
    event: "failed",
    ttl: "expire-failed",
    fence: "checks",
    finishes: true,
    logFields: ({ phase, reason }) => ({ phase, reason }),
    derive: (input) => ended("failed", input),
  },
  cancelled: {
    from: ["running"],
    to: "cancelled",
    event: "cancelled",
    ttl: "expire-failed",
    fence: "checks",
    finishes: true,
    logFields: ({ phase }) => ({ phase }),
    derive: (input) => ended("cancelled", input),
  },
  released: {
    from: ["running"],
    to: "queued",
    event: "queued",
    ttl: "leave",
    fence: "checks",
    finishes: false,
    logFields: () => ({ phase: "released" }),
    derive: ({ attempt, at }) => backInQueue("released", attempt, at),
  },
  throttled: {
    from: ["running"],
    to: "queued",
    event: "queued",
    ttl: "leave",
    fence: "checks",
    finishes: false,
    logFields: ({ retryAfterMs }) => ({ phase: "throttled", delay_ms: retryAfterMs }),
    derive: ({ attempt, at, reason }) => {
      const { event, record } = backInQueue("throttled", attempt, at);
      return { event: { ...event, error: reason }, record };
    },
  },
  abandoned: {
    from: liveStates,
    to: "failed",
    event: "failed",
    ttl: "expire-failed",
    fence: "none",
    finishes: true,
    logFields: ({ phase, reason }) => ({ phase, reason }),
    // The record counts the attempts the queue used, as the event names them:
    // BullMQ may have failed attempts that never recorded their STARTED (Redis away).
    derive: (input) => {
      const { event, record } = ended("failed", input);
      return { event, record: { ...record, attemptsMade: input.attempt } };
    },
  },
  cancelledWaiting: {
    from: ["queued", "retrying"],
    to: "cancelled",
    event: "cancelled",
    ttl: "expire-failed",
    fence: "none",
    finishes: true,
    derive: (input) => {
      const { event, record } = ended("cancelled", input);
      // Flagged too, so a worker that fetched the job meanwhile sees why it must not run.
      return { event, record: { ...record, cancelRequested: input.reason } };
    },
  },
  requeued: {
    from: ["failed"],
    to: "queued",
    event: "queued",
    ttl: "persist",
    fence: "none",
    finishes: false,
    derive: ({ at, traceparent }) => ({
      event: { type: "queued", state: "queued", progress: 0, phase: "retry", attempt: 0, time: at },
      record: {
        state: "queued",
        progress: 0,
        phase: "retry",
        attemptsMade: 0,
        failureReason: "",
        finishedAt: null,
        startedAt: null,
        result: null,
        cancelRequested: "",
        traceparent,
        requeuedAt: at,
        attemptToken: "",
      },
    }),
  },
  retryUnscheduled: {
    from: ["queued"],
    to: "failed",
    event: "failed",
    ttl: "expire-failed",
    fence: "none",
    finishes: false,
    derive: ({ at }) =>
      ended("failed", {
        attempt: 0,
        at,
        progress: 0,
        phase: "retry",
        reason: retryUnscheduledReason,
      }),
  },
  recovered: {
    from: liveStates,
    to: "queued",
    event: "queued",
    ttl: "leave",
    fence: "none",
    finishes: false,
    // The reconciler logs each repair itself (worker/reconciler.ts).
    derive: ({ at, reason, recoveries }) => ({
      event: {
        type: "queued",
        state: "queued",
        progress: 0,
        phase: "recovered",
        attempt: 0,
        time: at,
        error: reason,
      },
      record: {
        state: "queued",
        progress: 0,
        phase: "recovered",
        attemptsMade: 0,
        attemptToken: "",
        recoveries,
      },
    }),
  },
};

/** The job ends FAILED or CANCELLED where it stood, with a reason. */
function ended(
  state: "failed" | "cancelled",
  i: Position & { attempt: number; at: number; reason: string },
) {
  return {
    event: {
      type: state,
      state,
      progress: i.progress,
      phase: i.phase,
      attempt: i.attempt,
      time: i.at,
      error: i.reason,
    },
    record: { state, failureReason: i.reason, finishedAt: i.at },
  } satisfies { event: TransitionEvent; record: RecordUpdate };
}

/** Back to QUEUED without using the attempt: attemptsMade goes back to the attempts before it. */
function backInQueue(phase: string, attempt: number, at: number) {
  return {
    event: { type: "queued", state: "queued", progress: 0, phase, attempt, time: at },
    record: { state: "queued", progress: 0, phase, attemptsMade: attempt - 1 },
  } satisfies { event: TransitionEvent; record: RecordUpdate };
}
