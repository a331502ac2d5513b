--[[
  Applies the SUCCEEDED transition of an attempt (domain/job-transitions.ts
  `succeeded`: running to succeeded, a write of an attempt) as
  apply-transition.lua does, with only what that transition touches: the
  attempt's checks (state, BullMQ's lock, the fencing token), the record's
  fields (as job-record.ts encodes the transition's update), the finished
  index of succeeded jobs in place of the live index, the event (with the trace id of the record's traceparent) and
  its publish, and the retention of the record, the log and the idempotency
  record (expiring with the job, or at its own `until` if later). The
  tenant's backlog set loses the job, as on every transition to a state that
  is not a backlog state. Every attempt that succeeds ends with it, so its
  event passes no field names or constants, and no states or retention
  policy: fewer arguments and commands than the general script. A refused
  transition changes nothing.

  Input:
    KEYS[1] job record
    KEYS[2] event stream
    KEYS[3] finished index of succeeded jobs
    KEYS[4] BullMQ's lock of the job (read only)
    KEYS[5] index of live jobs
    KEYS[6] the tenant's backlog set
    KEYS[7] the job's idempotency record (only for a job submitted with a key)

    ARGV[1] event channel
    ARGV[2] how many entries the stream keeps
    ARGV[3] the attempt's fencing token (the record must hold it)
    ARGV[4] the attempt's lock token (KEYS[4] must hold it)
    ARGV[5] job id
    ARGV[6] the transition's time (ms): the finished index's score
    ARGV[7] the succeeded jobs' retention (ms, > 0)
    ARGV[8] attempt
    ARGV[9] the result's download path
    ARGV[10] the result's content type
    ARGV[11] the result's size (bytes)
    ARGV[12] the event's field/value pairs as JSON list text without its
             brackets (event-codec.ts encodeEventJson): the pairs that
             this script appends, in its order
    ARGV[13 ..] record field/value pairs

  Output:
    {1, entry id}  applied
    {0, state}     refused: the job is not running ("" when there is no record)
    {-1, state}    refused: the record holds another attempt's token (a stale attempt)
    {-2, state}    refused: BullMQ's lock on the job is gone or another fetch's (a lost lock)
]]
--- @include "includes/append-event"

local rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.attemptToken,
  RECORD.traceparent, RECORD.idempotencyKeyDigest)
local state = rec[1]
if not state then return {0, ''} end
if state ~= 'running' then return {0, state} end
if redis.call('GET', KEYS[4]) ~= ARGV[4] then return {-2, state} end
if rec[2] ~= ARGV[3] then return {-1, state} end
if not KEYS[7] and rec[4] then
  return redis.error_reply('ERR the job has an idempotency record: pass it as KEYS[7]')
end
local jobId, time, ttl = ARGV[5], ARGV[6], tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('ZADD', KEYS[3], time, jobId)
redis.call('ZREM', KEYS[5], jobId)
redis.call('SREM', KEYS[6], jobId)
-- In event-codec.ts encodeEvent's order.
local ev = {EVENT.type, 'succeeded', EVENT.state, 'succeeded', EVENT.progress, '100',
  EVENT.phase, 'completed', EVENT.attempt, ARGV[8], EVENT.time, time,
  EVENT.resultPath, ARGV[9], EVENT.resultType, ARGV[10], EVENT.resultSize, ARGV[11]}
local id = appendEvent(KEYS[2], ARGV[1], ARGV[2], ev, 1, 18, ARGV[12], traceIdOf(rec[3]))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if KEYS[7] then
  local idem = redis.call('HMGET', KEYS[7], 'job', 'until')
  if idem[1] == jobId then
    local untilMs = tonumber(idem[2]) or 0
    redis.call('PEXPIRE', KEYS[7], math.max(ttl, untilMs - tonumber(time)))
  end
end
return {1, id}
