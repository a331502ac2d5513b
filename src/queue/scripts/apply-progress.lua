--[[
  Applies the PROGRESS transition of an attempt (domain/job-transitions.ts
  `progress`: running to running, a write of an attempt) as
  apply-transition.lua does, with only what that transition touches: the
  attempt's checks (state, BullMQ's lock, the fencing token), the record's
  progress and phase, the live index's score, the event (with the trace id of
  the record's traceparent) and its publish. The tenant's backlog set loses
  the job, as on every transition to a state that is not a backlog state.
  Half of an attempt's writes are PROGRESS, so they pass no field names,
  states or retention: fewer arguments and commands than the general script.
  A refused transition changes nothing.

  Input:
    KEYS[1] job record
    KEYS[2] event stream
    KEYS[3] BullMQ's lock of the job (read only)
    KEYS[4] index of live jobs
    KEYS[5] the tenant's backlog set

    ARGV[1] event channel
    ARGV[2] how many entries the stream keeps
    ARGV[3] the attempt's fencing token (the record must hold it)
    ARGV[4] the attempt's lock token (KEYS[3] must hold it)
    ARGV[5] job id
    ARGV[6] the transition's time (ms)
    ARGV[7] progress (0-100)
    ARGV[8] phase
    ARGV[9] attempt
    ARGV[10] the event's field/value pairs as JSON list text without its
             brackets (event-codec.ts encodeEventJson): the pairs that
             this script appends, in its order

  Output:
    {1, entry id}  applied
    {0, state}     refused: the job is not running ("" when there is no record)
    {-1, state}    refused: the record holds another attempt's token (a stale attempt)
    {-2, state}    refused: BullMQ's lock on the job is gone or another fetch's (a lost lock)
]]
--- @include "includes/append-event"

local rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.attemptToken, RECORD.traceparent)
local state = rec[1]
if not state then return {0, ''} end
if state ~= 'running' then return {0, state} end
if redis.call('GET', KEYS[3]) ~= ARGV[4] then return {-2, state} end
if rec[2] ~= ARGV[3] then return {-1, state} end
local jobId, time, progress, phase = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
redis.call('HSET', KEYS[1], RECORD.progress, progress, RECORD.phase, phase)
redis.call('ZADD', KEYS[4], time, jobId)
redis.call('SREM', KEYS[5], jobId)
-- In event-codec.ts encodeEvent's order.
local ev = {EVENT.type, 'progress', EVENT.state, 'running', EVENT.progress, progress,
  EVENT.phase, phase, EVENT.attempt, ARGV[9], EVENT.time, time}
return {1, appendEvent(KEYS[2], ARGV[1], ARGV[2], ev, 1, 12, ARGV[10], traceIdOf(rec[3]))}
