/**
 * One watcher's view of a job as an async generator: the retained history
 * after a cursor, then the live events, each exactly once and in order,
 * ending after a terminal event. It pulls from a JobWatch (job-watch.ts says
 * why that is exact), one event at a time: the watch pauses until the
 * consumer asks for the next item.
 */
import type { JobEventView } from "../domain/job.js";
import type { EventHub } from "./event-hub.js";
import type { EventLog } from "./event-log.js";
import { JobWatch } from "./job-watch.js";

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
  const { signal } = options;
  signal.throwIfAborted();
  const items: WatchItem[] = [];
  let ended = false;
  let failure: { err: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const watch = new JobWatch(deps, options, {
    event(event) {
      items.push(event);
      notify();
      // One at a time: the next one when the consumer asks for it.
      return false;
    },
    keepalive() {
      items.push(null);
      notify();
    },
    end(err) {
      ended = true;
      if (err !== undefined) failure = { err };
      notify();
    },
  });
  const onAbort = () => {
    watch.close();
    notify();
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    void watch.start();
    for (;;) {
      const item = items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (signal.aborted) throw signal.reason;
      if (ended) {
        if (failure !== undefined) throw failure.err;
        return;
      }
      watch.resume();
      if (items.length > 0 || ended) continue;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    watch.close();
  }
}
