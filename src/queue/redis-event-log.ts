/**
 * The Redis side of the per-job event log (events/event-log.ts): one stream
 * per job. Every append also updates the job record and publishes the event
 * on the job's channel, atomically in one script, so the record, the log
 * and live watchers never disagree.
 */
import type { Redis } from "ioredis";
import { CursorTrimmedError } from "../domain/errors.js";
import { type JobState, liveStates } from "../domain/job.js";
import { compareStreamIds, decodeEvent, encodeEvent } from "../events/event-codec.js";
import type { EventLog } from "../events/event-log.js";
import type { Keys } from "./keys.js";
import { loadLuaScript } from "./scripts/load.js";

const appendScript = loadLuaScript("apply-transition");
const replayScript = loadLuaScript("replay-events");

/** Creates the event log over a command connection. */
export function createEventLog(deps: { redis: Redis; keys: Keys; maxLen: number }): EventLog {
  const { redis, keys, maxLen } = deps;
  return {
    async append(jobId, event, options = {}) {
      const allowed = options.allowedStates ?? liveStates;
      const updates = options.recordUpdates ?? [];
      const reply = (await appendScript.run(
        redis,
        [keys.job(jobId), keys.events(jobId), keys.finished("succeeded"), keys.finished("failed")],
        [
          keys.eventChannel(jobId),
          maxLen,
          allowed.join(","),
          options.ttlMs ?? 0,
          jobId,
          event.state,
          event.time,
          updates.length / 2,
          ...updates,
          ...encodeEvent(event),
        ],
      )) as [number, string];
      if (reply[0] === 1) return { appended: true, id: reply[1] };
      return reply[1] === ""
        ? { appended: false }
        : { appended: false, state: reply[1] as JobState };
    },

    async replay(jobId, afterId) {
      const start = afterId === undefined ? "-" : `(${afterId}`;
      const reply = (await replayScript.run(
        redis,
        [keys.job(jobId), keys.events(jobId)],
        [start, maxLen + 1],
      )) as [string, string?, [string, string[]][]?, string?];
      const [tenant, maxDeleted = "0-0", entries = [], state = "queued"] = reply;
      if (!tenant) return undefined;
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
