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
    KEYS[8 .. 7+p.backlogKeys] the keys whose lengths make up the backlog: per
            queue its wait and paused lists, prioritized and delayed sorted
            sets, in that order
    KEYS[8+p.backlogKeys] the tenant's backlog: the set of its queued and
            retrying jobs
    KEYS[9+p.backlogKeys .. #KEYS-1] BullMQ's add script's keys
    KEYS[#KEYS] index of live jobs (the reconciler's)

    ARGV[1] JSON parameters p: idem (a key was given), fp (request
            fingerprint), idemUntil (ms: the idempotency record lives at
            least until then), maxBacklog, maxLen (stream entries),
            channel (event channel), jobPrefix (job record key prefix),
            backlogKeys (count), rate (tokens/s, 0: no limit), burst, tenant,
            jobId, score (created ms), rec (record field/value pairs), ev
            (QUEUED event field/value pairs, without a trace id)
    ARGV[2..4] BullMQ's add script's ARGV

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
local p = cjson.decode(ARGV[1])
-- The job id is drawn afresh by every call, so a record under it means this
-- very call ran before: ioredis resent the script after losing its reply.
-- Answer with what that run made (the job may have moved on since) and
-- change nothing.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'own', p.jobId, redis.call('HGETALL', KEYS[2])}
end
if p.idem then
  local prev = redis.call('HMGET', KEYS[1], 'job', 'fp')
  if prev[1] then
    if prev[2] ~= p.fp then return {'conflict', prev[1]} end
    return {'dup', prev[1], redis.call('HGETALL', p.jobPrefix .. prev[1])}
  end
end
-- Token bucket (after the duplicate check: a deduplicated resubmit costs no
-- token). Redis's clock, so every API replica shares one bucket per tenant.
local tokens
if p.rate > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = redis.call('HMGET', KEYS[7], 'tokens', 'ts')
  tokens = tonumber(b[1]) or p.burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(p.burst, tokens + (now - ts) * p.rate / 1000) end
  if tokens < 1 then
    return {'rate', tostring(math.ceil((1 - tokens) * 1000 / p.rate))}
  end
  tokens = {tokens - 1, math.max(now, ts)}
end
-- The tenant's own bound first, so one tenant's jobs (far-future run_at ones
-- included) cannot fill the backlog every tenant shares.
local tenantBacklog = KEYS[8 + p.backlogKeys]
local mine = redis.call('SCARD', tenantBacklog)
if mine >= p.tenantMaxBacklog then return {'tenant-full', tostring(mine)} end
local backlog = 0
for i = 8, 7 + p.backlogKeys do
  local kind = (i - 8) % 4
  if kind == 1 or kind == 2 then
    backlog = backlog + redis.call('ZCARD', KEYS[i])
  else
    backlog = backlog + redis.call('LLEN', KEYS[i])
  end
end
if backlog >= p.maxBacklog then return {'full', tostring(backlog)} end
-- The token is spent only by a submit that is accepted.
if tokens then
  redis.call('HSET', KEYS[7], 'tokens', tostring(tokens[1]), 'ts', tostring(tokens[2]))
  redis.call('PEXPIRE', KEYS[7], math.ceil((p.burst - tokens[1]) * 1000 / p.rate) + 1000)
end
local bkeys = {}
for i = 9 + p.backlogKeys, #KEYS - 1 do bkeys[#bkeys + 1] = KEYS[i] end
local added = bullmqAdd(bkeys, {ARGV[2], ARGV[3], ARGV[4]})
if type(added) == 'number' and added < 0 then return {'error', tostring(added)} end
redis.call('SADD', tenantBacklog, p.jobId)
redis.call('HSET', KEYS[2], unpack(p.rec))
-- After the record: the event's trace id comes from the record's traceparent.
local id = appendEvent(KEYS[3], p.channel, p.maxLen, p.ev, 1, #p.ev,
  string.sub(cjson.encode(p.ev), 2, -2),
  traceIdOf(redis.call('HGET', KEYS[2], RECORD.traceparent)))
redis.call('ZADD', KEYS[4], p.score, p.jobId)
redis.call('ZADD', KEYS[5], p.score, p.jobId)
redis.call('SADD', KEYS[6], p.tenant)
redis.call('ZADD', KEYS[#KEYS], p.score, p.jobId)
if p.idem then
  -- No TTL while the job is live: the job's terminal transition sets it
  -- (apply-transition.lua), to the job's retention or `until`, the later.
  redis.call('HSET', KEYS[1], 'job', p.jobId, 'fp', p.fp, 'until', p.idemUntil)
end
return {'new', id}
