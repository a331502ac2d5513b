/**
 * The per-job event log: one Redis stream per job. Every append also updates
 * the job record and publishes the event on the job's channel, atomically in
 * one Lua script, so the record, the log and live watchers never disagree.
 */
import type { Redis } from "ioredis";
import { CursorTrimmedError } from "../domain/errors.js";
import { type JobEventView, type JobState, liveStates, terminalStates } from "../domain/job.js";
import type { Keys } from "../queue/keys.js";
import { loadLuaScript } from "../queue/scripts/load.js";
import { compareStreamIds, decodeEvent, encodeEvent, type NewJobEvent } from "./event-codec.js";

const appendScript = loadLuaScript("apply-transition");
const replayScript = loadLuaScript("replay-events");

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

/** True when no further event follows `state` (until a RetryJob). */
export function isTerminal(state: JobState): boolean {
  return terminalStates.has(state);
}
