--[[
  Applies the STARTED transition of an attempt (domain/job-transitions.ts
  `started`: a live state to running, a write of an attempt that sets its
  fencing token) as apply-transition.lua does, with only what that
  transition touches: the attempt's checks (a live state, BullMQ's lock), the
  record's fields (as job-record.ts encodes the transition's update, the
  attempt's token among them), the live index's score, the tenant's backlog
  set (the job leaves it), the event (with the trace id of the record's
  traceparent) and its publish. Every attempt begins with it, so its event
  passes no field names or constants, and no states or retention policy:
  fewer arguments and commands than the general script. A refused
  transition changes nothing.

  Input:
    KEYS[1] job record
    KEYS[2] event stream
    KEYS[3] BullMQ's lock of the job (read only)
    KEYS[4] index of live jobs
    KEYS[5] the tenant's backlog set

    ARGV[1] event channel
    ARGV[2] how many entries the stream keeps
    ARGV[3] the attempt's lock token (KEYS[3] must hold it)
    ARGV[4] job id
    ARGV[5] the transition's time (ms)
    ARGV[6] attempt
    ARGV[7] the event's progress (0-100)
    ARGV[8] the event's phase
    ARGV[9] the event's field/value pairs as JSON list text without its
            brackets (event-codec.ts encodeEventJson): the pairs that this
            script appends, in its order
    ARGV[10 ..] record field/value pairs

  Output:
    {1, entry id}  applied (a caller that needs the record as written sends
                   an HGETALL right behind this script: a record returned
                   from here would cross Lua twice)
    {0, state}     refused: the job is not live ("" when there is no record)
    {-2, state}    refused: BullMQ's lock on the job is gone or another fetch's (a lost lock)
]]
--- @include "includes/append-event"

local rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.traceparent)
local state = rec[1]
if not state then return {0, ''} end
if state ~= 'queued' and state ~= 'running' and state ~= 'retrying' then return {0, state} end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return {-2, state} end
local jobId, time = ARGV[4], ARGV[5]
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('ZADD', KEYS[4], time, jobId)
redis.call('SREM', KEYS[5], jobId)
-- In event-codec.ts encodeEvent's order.
local ev = {EVENT.type, 'started', EVENT.state, 'running', EVENT.progress, ARGV[7],
  EVENT.phase, ARGV[8], EVENT.attempt, ARGV[6], EVENT.time, time}
return {1, appendEvent(KEYS[2], ARGV[1], ARGV[2], ev, 1, 12, ARGV[9], traceIdOf(rec[2]))}
