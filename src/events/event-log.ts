/**
 * What a job's event log offers its readers: the retained events after a
 * cursor. Events are appended only together with the job's record change
 * (queue/transition-applier.ts, and the submit script for QUEUED) and
 * published to live watchers in the same atomic step, so the record, the log
 * and the watchers never disagree. The Redis side is queue/redis-event-log.ts;
 * this contract lives here so that watchJobEvents and the API depend on
 * events/ only, and events/ never imports queue/.
 */
import type { JobEventView, JobState } from "../domain/job.js";

/** A job's retained events, oldest first. */
export interface Replay {
  tenant: string;
  events: JobEventView[];
  /** The job's state when the events were read. */
  state: JobState;
}

/** Reads job event logs. */
export interface EventLog {
  /**
   * The job's events after `afterId` (all when undefined); undefined for an
   * unknown job.
   * @throws CursorTrimmedError when events after `afterId` were trimmed away,
   *   CursorAheadError when `afterId` is past every id the log handed out;
   *   `signal`'s reason when it has aborted: then nothing is read (the reply
   *   of a read already sent is not raced against it: queue/caller-signal.ts).
   */
  replay(jobId: string, afterId?: string, signal?: AbortSignal): Promise<Replay | undefined>;
}
