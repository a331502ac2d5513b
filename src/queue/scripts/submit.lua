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
    KEYS[8 .. 7+b] (b: ARGV[9]) the keys whose lengths make up the backlog: per
            queue its wait and paused lists, prioritized and delayed sorted
            sets, in that order
    KEYS[8+b] the tenant's backlog: the set of its queued and
            retrying jobs
    KEYS[9+b .. #KEYS-1] BullMQ's add script's keys
    KEYS[#KEYS] index of live jobs (the reconciler's)

    ARGV, flat (no JSON to decode):
    ARGV[1] '1' if an idempotency key was given, else '0'
    ARGV[2] fp: the request fingerprint
    ARGV[3] idemUntil (ms: the idempotency record lives at least until then)
    ARGV[4] maxBacklog
    ARGV[5] tenantMaxBacklog
    ARGV[6] maxLen (stream entries)
    ARGV[7] channel (event channel)
    ARGV[8] jobPrefix (job record key prefix)
    ARGV[9] backlogKeys: how many backlog keys KEYS holds
    ARGV[10] rate (tokens/s, 0: no limit)
    ARGV[11] burst
    ARGV[12] tenant
    ARGV[13] jobId
    ARGV[14] score (created ms)
    ARGV[15] r: how many record field/value arguments follow
    ARGV[16] e: how many QUEUED event field/value arguments follow them
    ARGV[17 .. 16+r] the record's field/value pairs
    ARGV[17+r .. 16+r+e] the QUEUED event's field/value pairs, without a trace id
    ARGV[17+r+e .. 19+r+e] BullMQ's add script's ARGV

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
local idem = ARGV[1] == '1'
local fp, idemUntil = ARGV[2], ARGV[3]
local maxBacklog, tenantMaxBacklog = tonumber(ARGV[4]), tonumber(ARGV[5])
local maxLen, channel, jobPrefix = ARGV[6], ARGV[7], ARGV[8]
local backlogKeys = tonumber(ARGV[9])
local rate, burst = tonumber(ARGV[10]), tonumber(ARGV[11])
local tenant, jobId, score = ARGV[12], ARGV[13], ARGV[14]
local nrec, nev = tonumber(ARGV[15]), tonumber(ARGV[16])
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
    if prev[2] ~= fp then return {'conflict', prev[1]} end
    return {'dup', prev[1], redis.call('HGETALL', jobPrefix .. prev[1])}
  end
end
-- Token bucket (after the duplicate check: a deduplicated resubmit costs no
-- token). Redis's clock, so every API replica shares one bucket per tenant.
local tokens
if rate > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = redis.call('HMGET', KEYS[7], 'tokens', 'ts')
  tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
  if tokens < 1 then
    return {'rate', tostring(math.ceil((1 - tokens) * 1000 / rate))}
  end
  tokens = {tokens - 1, math.max(now, ts)}
end
-- The tenant's own bound first, so one tenant's jobs (far-future run_at ones
-- included) cannot fill the backlog every tenant shares.
local tenantBacklog = KEYS[8 + backlogKeys]
local mine = redis.call('SCARD', tenantBacklog)
if mine >= tenantMaxBacklog then return {'tenant-full', tostring(mine)} end
local backlog = 0
for i = 8, 7 + backlogKeys do
  local kind = (i - 8) % 4
  if kind == 1 or kind == 2 then
    backlog = backlog + redis.call('ZCARD', KEYS[i])
  else
    backlog = backlog + redis.call('LLEN', KEYS[i])
  end
end
if backlog >= maxBacklog then return {'full', tostring(backlog)} end
-- The token is spent only by a submit that is accepted.
if tokens then
  redis.call('HSET', KEYS[7], 'tokens', tostring(tokens[1]), 'ts', tostring(tokens[2]))
  redis.call('PEXPIRE', KEYS[7], math.ceil((burst - tokens[1]) * 1000 / rate) + 1000)
end
local bkeys = {}
for i = 9 + backlogKeys, #KEYS - 1 do bkeys[#bkeys + 1] = KEYS[i] end
local a = 17 + nrec + nev
local added = bullmqAdd(bkeys, {ARGV[a], ARGV[a + 1], ARGV[a + 2]})
if type(added) == 'number' and added < 0 then return {'error', tostring(added)} end
redis.call('SADD', tenantBacklog, jobId)
redis.call('HSET', KEYS[2], unpack(ARGV, 17, 16 + nrec))
-- After the record: the event's trace id comes from the record's traceparent.
local ev = {unpack(ARGV, 17 + nrec, 16 + nrec + nev)}
local id = appendEvent(KEYS[2], KEYS[3], channel, maxLen, ev)
redis.call('ZADD', KEYS[4], score, jobId)
redis.call('ZADD', KEYS[5], score, jobId)
redis.call('SADD', KEYS[6], tenant)
redis.call('ZADD', KEYS[#KEYS], score, jobId)
if idem then
  -- No TTL while the job is live: the job's terminal transition sets it
  -- (apply-transition.lua), to the job's retention or `until`, the later.
  redis.call('HSET', KEYS[1], 'job', jobId, 'fp', fp, 'until', idemUntil)
end
return {'new', id}
