/**
 * A job's event log as its readers and writers see it: one stream of events
 * per job, each append applied with the job record and published to live
 * watchers atomically, so the record, the log and the watchers never
 * disagree. The Redis side (scripts, keys) is in queue/redis-event-log.ts;
 * this module is the contract watchJobEvents and the API depend on, so
 * events/ never imports queue/.
 */
import type { JobEventView, JobState } from "../domain/job.js";
import type { NewJobEvent } from "./event-codec.js";

/** How an append touches the job record. */
export interface AppendOptions {
  /** HSET pairs applied to the record with the event. */
  recordUpdates?: readonly string[];
  /** The states the job must be in for the append to happen (default: any live state). */
  allowedStates?: readonly JobState[];
  /** >0: both keys expire after this many ms; -1: both persist; 0/undefined: unchanged. */
  ttlMs?: number;
}

/** The outcome of an append. */
export type AppendResult = { appended: true; id: string } | { appended: false; state?: JobState };

/** A job's retained events, oldest first. */
export interface Replay {
  tenant: string;
  events: JobEventView[];
  /** The job's state when the events were read. */
  state: JobState;
}

/** Reads and writes job event logs. */
export interface EventLog {
  /** Appends an event if the job's state allows it; see AppendOptions. */
  append(jobId: string, event: NewJobEvent, options?: AppendOptions): Promise<AppendResult>;
  /**
   * The job's events after `afterId` (all when undefined); undefined for an
   * unknown job.
   * @throws CursorTrimmedError when events after `afterId` were trimmed away.
   */
  replay(jobId: string, afterId?: string): Promise<Replay | undefined>;
}
