/**
 * Watchers of one job that open together share one log read: replays of the
 * same job from the same cursor asked for in the same turn of the event loop
 * are sent as one read, just after that turn, and all get its answer. When
 * thousands of watchers open at once this turns one Redis round trip (and
 * one decode of the history) per watcher into one per job.
 *
 * Still exact (job-watch.ts): a watch asks for its replay only once it is
 * subscribed to live events, and a shared read is sent only after every
 * watch that joined it asked, so each one's subscription predates the read.
 * A read already sent is never joined. The events are shared: read-only.
 */
import type { EventLog, Replay } from "./event-log.js";

interface Batch {
  promise: Promise<Replay | undefined>;
}

/** Wraps `log` so that simultaneous replays of one job and cursor share a read. */
export function shareReplays(log: EventLog): EventLog {
  const waiting = new Map<string, Batch>();
  return {
    replay(jobId, afterId, signal) {
      if (signal?.aborted) return Promise.reject(signal.reason);
      const key = afterId === undefined ? jobId : `${jobId}\n${afterId}`;
      let batch = waiting.get(key);
      if (batch === undefined) {
        const promise = new Promise<Replay | undefined>((resolve, reject) => {
          setImmediate(() => {
            waiting.delete(key);
            log.replay(jobId, afterId).then(resolve, reject);
          });
        });
        batch = { promise };
        waiting.set(key, batch);
      }
      return batch.promise;
    },
  };
}
