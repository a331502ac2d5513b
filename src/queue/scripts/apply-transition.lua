--[[
  Applies one job state transition (the table of src/domain/job-transitions.ts):
  checks the job's state and, for a write of an attempt, that BullMQ's lock
  on the job still holds the attempt's lock token and the record the
  attempt's fencing token; updates the record, appends and publishes the
  event, keeps the finished indexes and sets the retention, all or nothing.
  A refused transition changes nothing.
  A terminal state enters the job in the finished index of its kind (for
  count-based retention); leaving a terminal state (RetryJob) takes it out of
  both. A live state (queued, running, retrying) keeps the job in the index
  of live jobs, scored by this transition's time; a terminal one takes it out
  (the reconciler reads that index). The tenant's backlog set holds the job
  exactly while it waits to run (TENANT_MAX_BACKLOG counts it). The job's idempotency record, when it
  has one, follows the job's retention: it persists with a live job and, on a
  terminal state, expires with the job or at its own `until`, whichever is
  later.

  Input:
    KEYS[1] job record
    KEYS[2] event stream
    KEYS[3] finished index of succeeded jobs
    KEYS[4] finished index of failed and cancelled jobs
    KEYS[5] BullMQ's lock of the job (read only)
    KEYS[6] index of live jobs
    KEYS[7] the tenant's backlog set: holds the job while it is queued or retrying
    KEYS[8] the job's idempotency record (only for a job submitted with a key;
            needed only when ARGV[5] is not 0, the only case that touches it)

    ARGV[1] event channel
    ARGV[2] how many entries the stream keeps
    ARGV[3] the states the job must be in: a comma list
    ARGV[4] the fencing token the record must hold ("": not checked)
    ARGV[5] ttl ms: >0 both keys expire after it, -1 both persist, 0 unchanged
    ARGV[6] job id
    ARGV[7] the job's state after the transition
    ARGV[8] the transition's time (ms): the finished index's score
    ARGV[9] n, the number of record field/value pairs that follow ARGV[13]
    ARGV[10] the lock token KEYS[5] must hold ("": not an attempt's write)
    ARGV[11] "1": the reply carries the record as written (so the caller
             need not read it first); "": it does not
    ARGV[12] the event's trace id: "*" the one of the record's traceparent
             (a transition that writes the traceparent passes its own
             instead), "" none
    ARGV[13] the event's field/value pairs as JSON list text without its
             brackets (the published message's, append-event.lua)
    ARGV[14 .. 13+2n] record field/value pairs
    ARGV[14+2n ..] event field/value pairs (event-codec.ts), without a trace id

  Output:
    {1, entry id}  applied
    {1, entry id, record}  applied, with ARGV[11] "1": the record's
                   field/value list (HGETALL) after the write
    {0, state}     refused: the job's state is not allowed ("" when there is no record)
    {-1, state}    refused: the record holds another attempt's token (a stale attempt)
    {-2, state}    refused: BullMQ's lock on the job is gone or another fetch's (a lost lock)
]]
--- @include "includes/append-event"

-- What the checks, the event's trace id and the retention need, in one read.
local rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.attemptToken,
  RECORD.traceparent, RECORD.idempotencyKeyDigest)
local state = rec[1]
if not state then return {0, ''} end
if not string.find(',' .. ARGV[3] .. ',', ',' .. state .. ',', 1, true) then
  return {0, state}
end
-- The lock first: an attempt whose lock expired is refused even while the
-- record still holds its token (no other attempt has started yet).
if ARGV[10] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[10] then
  return {-2, state}
end
if ARGV[4] ~= '' and rec[2] ~= ARGV[4] then
  return {-1, state}
end
local ttl = tonumber(ARGV[5])
-- Only a transition that sets the retention touches the idempotency record.
if not KEYS[8] and ttl ~= 0 and rec[4] then
  return redis.error_reply('ERR the job has an idempotency record: pass it as KEYS[8]')
end
local n = tonumber(ARGV[9])
local first = 14 + 2 * n
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 14, first - 1)) end
local jobId, newState, time = ARGV[6], ARGV[7], ARGV[8]
if newState == 'succeeded' then
  redis.call('ZADD', KEYS[3], time, jobId)
  redis.call('ZREM', KEYS[6], jobId)
elseif newState == 'failed' or newState == 'cancelled' then
  redis.call('ZADD', KEYS[4], time, jobId)
  redis.call('ZREM', KEYS[6], jobId)
else
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
    redis.call('ZREM', KEYS[3], jobId)
    redis.call('ZREM', KEYS[4], jobId)
  end
  redis.call('ZADD', KEYS[6], time, jobId)
end
if newState == 'queued' or newState == 'retrying' then
  redis.call('SADD', KEYS[7], jobId)
else
  redis.call('SREM', KEYS[7], jobId)
end
local traceId = ARGV[12]
if traceId == '*' then
  traceId = traceIdOf(rec[3])
elseif traceId == '' then
  traceId = nil
end
local id = appendEvent(KEYS[2], ARGV[1], ARGV[2], ARGV, first, #ARGV, ARGV[13], traceId)
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
elseif ttl < 0 then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
if KEYS[8] and ttl ~= 0 then
  local idem = redis.call('HMGET', KEYS[8], 'job', 'until')
  if idem[1] == jobId then
    if ttl > 0 then
      local untilMs = tonumber(idem[2]) or 0
      redis.call('PEXPIRE', KEYS[8], math.max(ttl, untilMs - tonumber(time)))
    else
      redis.call('PERSIST', KEYS[8])
    end
  end
end
if ARGV[11] == '1' then return {1, id, redis.call('HGETALL', KEYS[1])} end
return {1, id}
