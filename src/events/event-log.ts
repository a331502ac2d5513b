/**
 * The per-job event log: one Redis stream per job. Every append also updates
 * the job record and publishes the event on the job's channel, atomically in
 * one Lua script, so the record, the log and live watchers never disagree.
 */
import type { Redis } from "ioredis";
import { CursorTrimmedError } from "../domain/errors.js";
import { type JobEventView, type JobState, liveStates, terminalStates } from "../domain/job.js";
import type { Keys } from "../queue/keys.js";
import { createLuaScript } from "../queue/lua-script.js";
import { compareStreamIds, decodeEvent, encodeEvent, type NewJobEvent } from "./event-codec.js";

/**
 * KEYS: record, stream, finished-succeeded index, finished-failed index.
 * ARGV: channel, maxlen, allowed states ("*" or a comma list), ttl ms (>0
 * expire both keys, -1 persist both, 0 leave), job id, record pair count n,
 * n record field/value pairs, then event field/value pairs.
 * A terminal event enters the job in the finished index of its kind (for
 * count-based retention); an event that takes a job out of a terminal state
 * (RetryJob) takes it out of both.
 * Returns {1, id} when appended, {0, state or ""} when the record is missing
 * or its state is not allowed.
 */
const appendSource = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
local allowed = ARGV[3]
if allowed ~= '*' and not string.find(',' .. allowed .. ',', ',' .. state .. ',', 1, true) then
  return {0, state}
end
local n = tonumber(ARGV[6])
local first = 7 + 2 * n
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 7, first - 1)) end
local ev = {}
local newState, time = '', 0
for i = first, #ARGV do
  ev[#ev + 1] = ARGV[i]
  if ARGV[i - 1] == 's' and (i - first) % 2 == 1 then newState = ARGV[i] end
  if ARGV[i - 1] == 'tm' and (i - first) % 2 == 1 then time = ARGV[i] end
end
if newState == 'succeeded' then
  redis.call('ZADD', KEYS[3], time, ARGV[5])
elseif newState == 'failed' or newState == 'cancelled' then
  redis.call('ZADD', KEYS[4], time, ARGV[5])
elseif state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
end
-- Every event carries the trace id of the job's current run (from the
-- record's traceparent "00-<trace id>-<span id>-<flags>").
local tp = redis.call('HGET', KEYS[1], 'trace')
if tp then
  local tr = string.match(tp, '^%x%x%-(%x+)%-')
  if tr then
    ev[#ev + 1] = 'tr'
    ev[#ev + 1] = tr
  end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ev))
-- Cap the stream with XDEL rather than XADD MAXLEN: trimming does not move
-- the stream's max-deleted-entry-id (Redis 7.0), which replay relies on to
-- refuse a cursor into deleted history.
local excess = redis.call('XLEN', KEYS[2]) - tonumber(ARGV[2])
if excess > 0 then
  local old = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', excess)
  local ids = {}
  for i = 1, #old do ids[i] = old[i][1] end
  redis.call('XDEL', KEYS[2], unpack(ids))
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
elseif ttl < 0 then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
redis.call('PUBLISH', ARGV[1], cjson.encode({id, ev}))
return {1, id}
`;

/**
 * KEYS: record, stream. ARGV: XRANGE start, count.
 * Returns {tenant, max-deleted-entry-id, entries, state}; {""} when the job is unknown.
 */
const replaySource = `
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if not tenant then return {''} end
local maxDeleted = '0-0'
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then maxDeleted = info[i + 1] end
  end
end
return {tenant, maxDeleted, redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2]),
  redis.call('HGET', KEYS[1], 'state')}
`;

const appendScript = createLuaScript(appendSource);
const replayScript = createLuaScript(replaySource);

/** How an append touches the job record. */
export interface AppendOptions {
  /** HSET pairs applied to the record with the event. */
  recordUpdates?: readonly string[];
  /** The states the job must be in for the append to happen (default: any live state). */
  allowedStates?: readonly JobState[] | "*";
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
          allowed === "*" ? "*" : allowed.join(","),
          options.ttlMs ?? 0,
          jobId,
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
