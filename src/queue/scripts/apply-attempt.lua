--[[
  Applies an attempt's STARTED, PROGRESS or SUCCEEDED transition
  (domain/job-transitions.ts `started`, `progress`, `succeeded`: every attempt
  that succeeds makes exactly these) as apply-transition.lua does, with only
  what each touches, and without the field names, states and retention
  policy that the general script takes as arguments: fewer arguments and
  commands per call. One script for the three, so that an attempt's STARTED
  (the first of its writes, with the EVAL fallback after a NOSCRIPT) leaves
  the script cached for its later writes: a SUCCEEDED sent into a Redis that
  then stops answering has nothing to load first.

  What each does, all or nothing; a refused transition changes nothing:
  - started (a live state to running): checks BullMQ's lock; writes the
    record's fields (as job-record.ts encodes the transition's update, the
    attempt's fencing token among them), the live index's score; the job
    leaves the tenant's backlog set.
  - progress (running to running), one or more reports of the attempt in
    order (a processor holds reports that come close together and sends them
    in one call): checks BullMQ's lock and the record's fencing token, once;
    writes the record's progress and phase (the last report's), the live
    index's score (the last report's time); the job leaves the tenant's
    backlog set (as on every transition to a state that is not a backlog
    state: a no-op unless the set was wrong). Each report appends and
    publishes its own event, in order.
  - succeeded (running to succeeded): the checks of progress; writes the
    record's fields (as job-record.ts encodes the update); enters the job in
    the finished index of succeeded jobs, takes it out of the live index and
    the tenant's backlog set; sets the retention of the record and the log,
    and of the idempotency record when it names the job (the job's
    retention, or its own `until` if later).
  - progress+succeeded: succeeded with progress reports of the attempt not
    sent yet (held when the generator returned): their events are appended
    and published first, in order, then the succeeded event; their record
    writes (progress, phase, live index, backlog set) are left out, as
    succeeded overwrites or undoes each of them. Applied as progress then
    succeeded would be, with the checks done once.
  - started+succeeded, started+progress+succeeded: the whole of an attempt
    that ended before its STARTED was sent (a processor holds STARTED as it
    holds progress reports): started's checks (the attempt's token is not
    checked: this call writes it), then what progress+succeeded does, with
    the STARTED event appended and published first; STARTED's record writes
    come merged into the record pairs (the caller's), and its live-index and
    backlog-set writes are left out (succeeded undoes both). Applied as
    started, progress and succeeded one by one would be.
  Each appends its event (event-codec.ts encodeEvent's fields and order, the
  trace id of the record's traceparent last) and publishes it; the stream is
  capped once per call, after its last event.

  Input:
    ARGV[1] the transition: "started", "progress", "succeeded" or
    "progress+succeeded" (succeeded with progress reports before it); the
    other KEYS and ARGV by transition:
  started:
    KEYS[1] job record, KEYS[2] event stream, KEYS[3] BullMQ's lock of the
    job (read only), KEYS[4] index of live jobs, KEYS[5] the tenant's
    backlog set
    ARGV[2] event channel, ARGV[3] how many entries the stream keeps,
    ARGV[4] the attempt's lock token (KEYS[3] must hold it), ARGV[5] job id,
    ARGV[6] the transition's time (ms), ARGV[7] attempt, ARGV[8] the
    event's progress, ARGV[9] the event's phase, ARGV[10] the event's JSON
    (below), ARGV[11 ..] record field/value pairs
  progress:
    KEYS as for started
    ARGV[2] event channel, ARGV[3] how many entries the stream keeps,
    ARGV[4] the attempt's lock token, ARGV[5] the attempt's fencing token
    (the record must hold it), ARGV[6] job id, ARGV[7] attempt,
    ARGV[8 ..] the reports, four values each, in order (a report below)
  succeeded:
    KEYS[1] job record, KEYS[2] event stream, KEYS[3] BullMQ's lock of the
    job (read only), KEYS[4] index of live jobs, KEYS[5] the tenant's
    backlog set, KEYS[6] finished index of succeeded jobs, KEYS[7] the job's
    idempotency record (only for a job submitted with a key)
    ARGV[2] event channel, ARGV[3] how many entries the stream keeps,
    ARGV[4] the attempt's lock token, ARGV[5] the attempt's fencing token,
    ARGV[6] job id, ARGV[7] the transition's time (ms): the finished index's
    score, ARGV[8] attempt, ARGV[9] the succeeded jobs' retention (ms, > 0),
    ARGV[10] the result's download path, ARGV[11] its content type,
    ARGV[12] its size (bytes), ARGV[13] the event's JSON, ARGV[14 ..]
    record field/value pairs
  progress+succeeded:
    KEYS and ARGV[2 .. 13] as for succeeded, ARGV[14] n (1 or more), the
    progress reports before it, ARGV[15 .. 14 + 4n] those reports, in
    order, ARGV[15 + 4n ..] record field/value pairs
  started+succeeded, started+progress+succeeded:
    KEYS and ARGV[2 .. 13] as for succeeded (ARGV[5] is the token the record
    pairs write), ARGV[14] n (0 or more), ARGV[15 .. 14 + 4n] the progress
    reports, ARGV[15 + 4n] STARTED's time (ms), ARGV[16 + 4n] its progress,
    ARGV[17 + 4n] its phase, ARGV[18 + 4n] its event's JSON, ARGV[19 + 4n ..]
    record field/value pairs (STARTED's and SUCCEEDED's, merged)
  A report: its time (ms), progress (0-100), phase, and its event's JSON.
  The event's JSON: its field/value pairs as JSON list text without its
  brackets (event-codec.ts encodeEventJson), the pairs this script appends.

  Output:
    {1, entry id}  applied (a caller that needs the record as written sends
                   an HGETALL right behind this script: a record returned
                   from here would cross Lua twice)
    {0, state}     refused: the job's state is not allowed ("" when there is no record)
    {-1, state}    refused: the record holds another attempt's token (a stale attempt)
    {-2, state}    refused: BullMQ's lock on the job is gone or another fetch's (a lost lock)
]]
--- @include "includes/append-event"

local kind = ARGV[1]
-- The attempt's STARTED travels in this call (written before the succeeded part).
local withStart = kind == 'started+succeeded' or kind == 'started+progress+succeeded'
-- Only the fields the transition's checks need (each costs a scan of the record).
local rec
if kind == 'started' then
  rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.traceparent)
elseif kind == 'progress' then
  rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.traceparent, RECORD.attemptToken)
else
  rec = redis.call('HMGET', KEYS[1], RECORD.state, RECORD.traceparent, RECORD.attemptToken,
    RECORD.idempotencyKeyDigest)
end
local state = rec[1]
if not state then return {0, ''} end
if kind == 'started' or withStart then
  if state ~= 'queued' and state ~= 'running' and state ~= 'retrying' then return {0, state} end
elseif state ~= 'running' then
  return {0, state}
end
-- The lock first: an attempt whose lock expired is refused even while the
-- record still holds its token (no other attempt has started yet).
if redis.call('GET', KEYS[3]) ~= ARGV[4] then return {-2, state} end
if kind ~= 'started' and not withStart and rec[3] ~= ARGV[5] then return {-1, state} end
local traceId = traceIdOf(rec[2])

if kind == 'started' then
  local jobId, time = ARGV[5], ARGV[6]
  redis.call('HSET', KEYS[1], unpack(ARGV, 11))
  redis.call('ZADD', KEYS[4], time, jobId)
  redis.call('SREM', KEYS[5], jobId)
  local ev = {EVENT.type, 'started', EVENT.state, 'running', EVENT.progress, ARGV[8],
    EVENT.phase, ARGV[9], EVENT.attempt, ARGV[7], EVENT.time, time}
  return {1, appendEvent(KEYS[2], ARGV[2], ARGV[3], ev, 1, 12, ARGV[10], traceId)}
end

if kind == 'progress' then
  local jobId, last = ARGV[6], #ARGV - 3
  redis.call('HSET', KEYS[1], RECORD.progress, ARGV[last + 1], RECORD.phase, ARGV[last + 2])
  redis.call('ZADD', KEYS[4], ARGV[last], jobId)
  redis.call('SREM', KEYS[5], jobId)
  -- One table for every report; the stream is capped after the last.
  local ev = {EVENT.type, 'progress', EVENT.state, 'running', EVENT.progress, '',
    EVENT.phase, '', EVENT.attempt, ARGV[7], EVENT.time, ''}
  local id
  for i = 8, last, 4 do
    ev[6], ev[8], ev[12] = ARGV[i + 1], ARGV[i + 2], ARGV[i]
    id = appendEvent(KEYS[2], ARGV[2], i == last and ARGV[3] or nil, ev, 1, 12, ARGV[i + 3],
      traceId)
  end
  return {1, id}
end

local reports = (kind == 'progress+succeeded' or withStart) and tonumber(ARGV[14]) or 0
if kind ~= 'succeeded' and not withStart and reports == 0 then
  return redis.error_reply('ERR unknown transition ' .. kind)
end
if not KEYS[7] and rec[4] then
  return redis.error_reply('ERR the job has an idempotency record: pass it as KEYS[7]')
end
local jobId, time, ttl = ARGV[6], ARGV[7], tonumber(ARGV[9])
-- The record's pairs follow STARTED's values (started+...), the reports
-- (progress+succeeded) or the event's JSON.
local recordAt = withStart and 19 + 4 * reports or reports > 0 and 15 + 4 * reports or 14
redis.call('HSET', KEYS[1], unpack(ARGV, recordAt))
redis.call('ZADD', KEYS[6], time, jobId)
redis.call('ZREM', KEYS[4], jobId)
redis.call('SREM', KEYS[5], jobId)
if withStart then
  local s = 15 + 4 * reports
  local ev = {EVENT.type, 'started', EVENT.state, 'running', EVENT.progress, ARGV[s + 1],
    EVENT.phase, ARGV[s + 2], EVENT.attempt, ARGV[8], EVENT.time, ARGV[s]}
  appendEvent(KEYS[2], ARGV[2], nil, ev, 1, 12, ARGV[s + 3], traceId)
end
if reports > 0 then
  -- Their events only: SUCCEEDED overwrites or undoes each of their record writes.
  local ev = {EVENT.type, 'progress', EVENT.state, 'running', EVENT.progress, '',
    EVENT.phase, '', EVENT.attempt, ARGV[8], EVENT.time, ''}
  for i = 15, 11 + 4 * reports, 4 do
    ev[6], ev[8], ev[12] = ARGV[i + 1], ARGV[i + 2], ARGV[i]
    appendEvent(KEYS[2], ARGV[2], nil, ev, 1, 12, ARGV[i + 3], traceId)
  end
end
local ev = {EVENT.type, 'succeeded', EVENT.state, 'succeeded', EVENT.progress, '100',
  EVENT.phase, 'completed', EVENT.attempt, ARGV[8], EVENT.time, time,
  EVENT.resultPath, ARGV[10], EVENT.resultType, ARGV[11], EVENT.resultSize, ARGV[12]}
local id = appendEvent(KEYS[2], ARGV[2], ARGV[3], ev, 1, 18, ARGV[13], traceId)
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
