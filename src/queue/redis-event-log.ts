/**
 * The Redis side of the per-job event log (events/event-log.ts): one stream
 * per job, read with its record in one script. Appends are transitions
 * (transition-applier.ts) or the submit script's QUEUED event, both through
 * scripts/includes/append-event.lua.
 */

import { CursorAheadError, CursorTrimmedError } from "../domain/errors.js";
import type { JobState } from "../domain/job.js";
import { compareStreamIds, decodeEvent } from "../events/event-codec.js";
import type { EventLog } from "../events/event-log.js";
import { throwIfAborted } from "./caller-signal.js";
import type { RedisClient } from "./connections.js";
import type { Keys } from "./keys.js";
import { loadLuaScript } from "./scripts/load.js";

const replayScript = loadLuaScript("replay-events");

/** Creates the event log reader over a command connection. */
export function createEventLog(deps: { redis: RedisClient; keys: Keys; maxLen: number }): EventLog {
  const { redis, keys, maxLen } = deps;
  return {
    async replay(jobId, afterId, signal) {
      const start = afterId === undefined ? "-" : `(${afterId}`;
      throwIfAborted(signal);
      const reply = (await replayScript.run(
        redis,
        [keys.job(jobId), keys.events(jobId)],
        [start, maxLen + 1],
      )) as [string, string?, [string, string[]][]?, string?, string?];
      const [tenant, maxDeleted = "0-0", entries = [], state = "queued", last = "0-0"] = reply;
      if (!tenant) return undefined;
      // Every id of the log is at most its last-generated-id: a cursor past
      // it was never handed out, and nothing would ever come after it.
      if (afterId !== undefined && compareStreamIds(afterId, last) > 0) {
        throw new CursorAheadError(afterId);
      }
      if (afterId !== undefined && compareStreamIds(afterId, maxDeleted) < 0) {
        throw new CursorTrimmedError(afterId);
      }
      return {
        tenant,
        events: entries.map(([id, fields]) => decodeEvent(id, fields)),
        state: state as JobState,
      };
    },
  };
}
