--[[
  SubmitReport in one round trip: checks the idempotency record, the tenant's
  submit rate and the backlog bound, adds the BullMQ job (BullMQ's own add
  script runs inside this one), writes the job record, appends the QUEUED
  event, indexes the job for its tenant and user and as live, and stores the
  idempotency record, all or nothing.

  The slot `bullmq-add` is filled, by submitter.ts, with the body of BullMQ's
  add script for the job's kind (standard, prioritized, delayed): one
  composed script per kind (scripts/load.ts composeScript).

  Input:
    KEYS[1] idempotency record (hash {job, fp, until}); the job record when no key was given
    KEYS[2] job record
    KEYS[3] event stream
    KEYS[4] tenant index
    KEYS[5] user index
    KEYS[6] set of tenants
    KEYS[7] the tenant's submit token bucket
    KEYS[8 .. 7+b] (b = ARGV[8], four per queue) the keys whose lengths
            make up the backlog: every queue's prioritized sorted set, then
            every queue's delayed sorted set, wait list, paused list, queues
            in the same order each time
    KEYS[8+b] the tenant's backlog: the set of its queued and retrying jobs
    KEYS[9+b .. #KEYS-1] BullMQ's add script's keys
    KEYS[#KEYS] index of live jobs (the reconciler's)

    ARGV[1] job id
    ARGV[2] request fingerprint
    ARGV[3] idempotency record's `until` (ms: it lives at least until then)
    ARGV[4] the backlog bound, ARGV[5] the tenant's backlog bound
    ARGV[6] event channel
    ARGV[7] job record key prefix
    ARGV[8] how many backlog keys (KEYS[8 ..]) there are
    ARGV[9] the tenant's submit rate (tokens/s; 0: no limit), ARGV[10] its burst
    ARGV[11] tenant
    ARGV[12] the job's creation time (ms): the indexes' score
    ARGV[13] the trace id of the record's traceparent ('' without one): the
             QUEUED event's last pair
    ARGV[14] the JSON text of the QUEUED event's pairs (append-event.lua)
    ARGV[15 .. 17] BullMQ's add script's ARGV
    ARGV[18] m, how many strings the record's optional pairs are
    ARGV[19 .. 32] the values of the job record's first 14 pairs (job-record.ts
             encodeNewRecord: id, tenant, user, type, state, progress,
             phase, attempts, max attempts, reason, created, filters,
             priority, fingerprint; their names are this script's)
    ARGV[33 .. 32+m] the record's optional field/value pairs (run at,
             deadline, traceparent, idempotency key digest), as encodeNewRecord
             ends
    The QUEUED event is the submitted transition's (domain/job-transitions.ts):
    type and state queued, progress 0, phase '', attempt 0, time ARGV[12].
    An idempotency key was given when KEYS[1] is not the job record.

  Output:
    {'new', entry id}        queued
    {'own', job id, record}  this call ran before (a resent script): the job
                             it made, as it is now (HGETALL reply)
    {'dup', job id, record}  the key's job (HGETALL reply; empty once expired)
    {'conflict', job id}     the key was used for a different request
    {'rate', retry ms}       the tenant is over its submit rate
    {'tenant-full', backlog} the tenant's backlog is full
    {'full', backlog}        the backlog is full
    {'error', code}          BullMQ's add failed with this code
]]
--- @include "includes/append-event"

local function bullmqAdd(KEYS, ARGV)
--- @compose bullmq-add
end
local jobId = ARGV[1]
local idem = KEYS[1] ~= KEYS[2]
-- The job id is drawn afresh by every call, so a record under it means this
-- very call ran before: ioredis resent the script after losing its reply.
-- Answer with what that run made (the job may have moved on since) and
-- change nothing.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'own', jobId, redis.call('HGETALL', KEYS[2])}
end
if idem then
  local prev = redis.call('HMGET', KEYS[1], 'job', 'fp')
  if prev[1] then
    if prev[2] ~= ARGV[2] then return {'conflict', prev[1]} end
    return {'dup', prev[1], redis.call('HGETALL', ARGV[7] .. prev[1])}
  end
end
-- Token bucket (after the duplicate check: a deduplicated resubmit costs no
-- token). Redis's clock, so every API replica shares one bucket per tenant.
local rate = tonumber(ARGV[9])
local tokens
if rate > 0 then
  local burst = tonumber(ARGV[10])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = redis.call('HMGET', KEYS[7], 'tokens', 'ts')
  tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
  if tokens < 1 then
    return {'rate', tostring(math.ceil((1 - tokens) * 1000 / rate))}
  end
  tokens = {tokens - 1, math.max(now, ts), burst}
end
-- The tenant's own bound first, so one tenant's jobs (far-future run_at ones
-- included) cannot fill the backlog every tenant shares.
local backlogKeys = tonumber(ARGV[8])
local tenantBacklog = KEYS[8 + backlogKeys]
local mine = redis.call('SCARD', tenantBacklog)
if mine >= tonumber(ARGV[5]) then return {'tenant-full', tostring(mine)} end
-- An empty list or sorted set does not exist: one EXISTS says how many of
-- the backlog's keys hold jobs, and only those are counted, the likeliest
-- first (every job has a priority, so it waits in a prioritized set).
local backlog = 0
local left = redis.call('EXISTS', unpack(KEYS, 8, 7 + backlogKeys))
local zsets = 7 + backlogKeys / 2
for i = 8, 7 + backlogKeys do
  if left == 0 then break end
  local n
  if i <= zsets then n = redis.call('ZCARD', KEYS[i]) else n = redis.call('LLEN', KEYS[i]) end
  if n > 0 then
    backlog = backlog + n
    left = left - 1
  end
end
if backlog >= tonumber(ARGV[4]) then return {'full', tostring(backlog)} end
-- The token is spent only by a submit that is accepted.
if tokens then
  redis.call('HSET', KEYS[7], 'tokens', tostring(tokens[1]), 'ts', tostring(tokens[2]))
  redis.call('PEXPIRE', KEYS[7], math.ceil((tokens[3] - tokens[1]) * 1000 / rate) + 1000)
end
local bkeys = {}
for i = 9 + backlogKeys, #KEYS - 1 do bkeys[#bkeys + 1] = KEYS[i] end
local added = bullmqAdd(bkeys, {ARGV[15], ARGV[16], ARGV[17]})
if type(added) == 'number' and added < 0 then return {'error', tostring(added)} end
redis.call('SADD', tenantBacklog, jobId)
redis.call('HSET', KEYS[2], RECORD.id, ARGV[19], RECORD.tenant, ARGV[20],
  RECORD.userId, ARGV[21], RECORD.reportType, ARGV[22], RECORD.state, ARGV[23],
  RECORD.progress, ARGV[24], RECORD.phase, ARGV[25], RECORD.attemptsMade, ARGV[26],
  RECORD.maxAttempts, ARGV[27], RECORD.failureReason, ARGV[28],
  RECORD.createdAt, ARGV[29], RECORD.filters, ARGV[30], RECORD.priority, ARGV[31],
  RECORD.fingerprint, ARGV[32], unpack(ARGV, 33, 32 + tonumber(ARGV[18])))
-- The stream is new (the job id is), so its one entry cannot exceed the cap
-- (EVENT_STREAM_MAXLEN is at least 10): no capping (maxLen nil).
local traceId = ARGV[13] ~= '' and ARGV[13] or nil
local id = appendEvent(KEYS[3], ARGV[6], nil, {EVENT.type, 'queued', EVENT.state, 'queued',
  EVENT.progress, '0', EVENT.phase, '', EVENT.attempt, '0', EVENT.time, ARGV[12]},
  1, 12, ARGV[14], traceId)
local score = ARGV[12]
redis.call('ZADD', KEYS[4], score, jobId)
redis.call('ZADD', KEYS[5], score, jobId)
redis.call('SADD', KEYS[6], ARGV[11])
redis.call('ZADD', KEYS[#KEYS], score, jobId)
if idem then
  -- No TTL while the job is live: the job's terminal transition sets it
  -- (apply-transition.lua), to the job's retention or `until`, the later.
  redis.call('HSET', KEYS[1], 'job', jobId, 'fp', ARGV[2], 'until', ARGV[3])
end
return {'new', id}
