/**
 * One watcher's view of a job: the retained history after a cursor, then the
 * live events, each exactly once and in order, ending after a terminal event.
 *
 * Why it is exact: the watcher subscribes to live events *before* reading the
 * log, so every event is either in the log read or arrives live afterwards
 * (appends write the log and publish in one atomic script); events present in
 * both are dropped by comparing stream ids with the last one delivered. After
 * a subscriber reconnect the log is read again from the last id delivered.
 * The watch ends after a terminal event that is the latest one logged; a
 * terminal event followed by more (RetryJob) does not end a replay.
 */
import { JobNotFoundError } from "../domain/errors.js";
import { type JobEventView, terminalEventTypes, terminalStates } from "../domain/job.js";
import { compareStreamIds } from "./event-codec.js";
import type { EventHub } from "./event-hub.js";
import type { EventLog } from "./event-log.js";

/** What a watch yields: an event, or `null` as a keepalive tick. */
export type WatchItem = JobEventView | null;

/** Parameters of one watch. */
export interface WatchOptions {
  jobId: string;
  tenant: string;
  afterEventId?: string;
  /** Ends the watch (the generator throws the signal's reason); no log read starts after it aborts. */
  signal: AbortSignal;
  /** A `null` item is yielded after this long without events. */
  keepaliveMs: number;
}

/**
 * Streams a job's events.
 * @throws JobNotFoundError for an unknown job or another tenant's job,
 *   CursorTrimmedError for a cursor into trimmed history, CursorAheadError
 *   for a cursor past the log's newest id (at once: nothing would come).
 */
export async function* watchJobEvents(
  deps: { log: EventLog; hub: EventHub },
  options: WatchOptions,
): AsyncGenerator<WatchItem> {
  const { log, hub } = deps;
  const { jobId, tenant, signal, keepaliveMs } = options;
  const pending: JobEventView[] = [];
  let resync = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  signal.throwIfAborted();
  const unsubscribe = await hub.subscribe(jobId, {
    onEvent(event) {
      pending.push(event);
      notify();
    },
    onResync() {
      resync = true;
      notify();
    },
  });
  try {
    let last = options.afterEventId;
    const replay = await log.replay(jobId, last, signal);
    if (replay === undefined || replay.tenant !== tenant) throw new JobNotFoundError(jobId);
    // Resumed from the terminal event: nothing more will come. (A cursor past
    // the log's newest id never gets here: the replay refuses it.)
    if (replay.events.length === 0 && terminalStates.has(replay.state)) return;
    let queue: JobEventView[] = replay.events;
    for (;;) {
      for (const [i, event] of queue.entries()) {
        if (last !== undefined && compareStreamIds(event.id, last) <= 0) continue;
        yield event;
        last = event.id;
        // A terminal event ends the watch unless newer events follow it (a
        // RetryJob re-queued the job after it FAILED). Live copies of events
        // already delivered (pending since the replay) do not count.
        if (
          terminalEventTypes.has(event.type) &&
          !hasNewer(queue.slice(i + 1), event.id) &&
          !hasNewer(pending, event.id)
        )
          return;
      }
      if (resync) {
        resync = false;
        pending.length = 0;
        const again = await log.replay(jobId, last, signal);
        if (again === undefined) throw new JobNotFoundError(jobId);
        queue = again.events;
        continue;
      }
      if (pending.length > 0) {
        queue = pending.splice(0, pending.length);
        continue;
      }
      queue = [];
      const woke = await new Promise<boolean>((resolve, reject) => {
        const timer = setTimeout(() => finish(false), keepaliveMs);
        const onAbort = () => {
          cleanup();
          reject(signal.reason);
        };
        const finish = (v: boolean) => {
          cleanup();
          resolve(v);
        };
        const cleanup = () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          wake = undefined;
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener("abort", onAbort, { once: true });
        wake = () => finish(true);
      });
      if (!woke) yield null;
    }
  } finally {
    unsubscribe();
  }
}

/** True when `events` holds one newer than `id`. */
function hasNewer(events: readonly JobEventView[], id: string): boolean {
  return events.some((e) => compareStreamIds(e.id, id) > 0);
}
