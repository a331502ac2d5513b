--[[
  SubmitReport in one round trip: checks the idempotency record, the tenant's
  submit rate and the backlog bound, adds the BullMQ job (BullMQ's own add
  script runs inside this one), writes the job record, appends the QUEUED
  event (not published: no one can be watching a job this call creates),
  indexes the job for its tenant and user and as live, and stores the
  idempotency record, all or nothing.

  The slot `bullmq-add` is filled, by submitter.ts, with the body of BullMQ's
  add script for the job's kind (standard, prioritized, delayed); the slot
  `constants` with what every call for one queue of one shard passes alike
  (the keys that hold no job's or tenant's name, the bounds, the rate, a new
  job's record values); the slot `backlog-count` with the count of the
  backlog over its keys: one composed script per kind, queue and shard
  (scripts/load.ts composeScript). Each argument of a call costs Redis about
  1,300 instructions (its RESP parse, its object, its Lua string), and a
  table built per call more (a table of these constants cost 13,000 per
  call); a literal of the script's text is a constant of its compiled
  function, nothing per call. The constant keys are not declared: they carry
  the shard's tag, so on a cluster they are in the slot of the declared ones
  (docs/cluster-notes.md).

  Constants (the slot `constants`: locals holding literals):
    tenantsKey      set of tenants
    addKeys         BullMQ's add script's keys (a table: its KEYS)
    liveKey         index of live jobs (the reconciler's)
    maxBacklog, tenantMaxBacklog   the backlog bounds
    jobPrefix       job record key prefix
    rate, burst     the tenant's submit rate (tokens/s; 0: no limit), its burst
    newReportType, newState, newMaxAttempts
                    the values of a new job's record fields that every job of
                    the queue shares
  The slot `backlog-count` adds to the local `backlog` the jobs of the keys
  whose lengths make up the backlog (four per queue: its prioritized and
  delayed sorted sets, its wait and paused lists), counting only as many
  keys as an EXISTS of them all says hold jobs.

  Input:
    KEYS[1] idempotency record (hash {job, fp, until}); the job record when no key was given
    KEYS[2] job record
    KEYS[3] event stream
    KEYS[4] tenant index
    KEYS[5] user index
    KEYS[6] the tenant's submit token bucket
    KEYS[7] the tenant's backlog: the set of its queued and retrying jobs

    ARGV[1] job id
    ARGV[2] request fingerprint
    ARGV[3] idempotency record's `until` (ms: it lives at least until then)
    ARGV[4] tenant
    ARGV[5] the job's creation time (ms): the indexes' score
    ARGV[6] the trace id of the record's traceparent ('' without one): the
             QUEUED event's last pair
    ARGV[7 .. 9] BullMQ's add script's ARGV
    ARGV[10 .. 12] the job record's user, filters and priority
    ARGV[13 ..] the record's optional field/value pairs (run at, deadline,
             traceparent, idempotency key digest), as encodeNewRecord ends
    The record's other values are the job id, tenant, creation time and
    fingerprint above, and the constants of a new job of this queue
    (new<Field>: report type, state, max attempts); their names are this
    script's (job-record.ts encodeNewRecord's ten fixed pairs, in its
    order). Fields at their default (progress, phase, attempts, failure
    reason) are not written: decodeRecord reads their absence as it.
    The QUEUED event is the submitted transition's (domain/job-transitions.ts):
    type and state queued, progress 0, phase '', attempt 0, time ARGV[5].
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
--- @compose constants

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
    return {'dup', prev[1], redis.call('HGETALL', jobPrefix .. prev[1])}
  end
end
-- Token bucket (after the duplicate check: a deduplicated resubmit costs no
-- token). Redis's clock, so every API replica shares one bucket per tenant.
local tokens
if rate > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = redis.call('HMGET', KEYS[6], 'tokens', 'ts')
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
local tenantBacklog = KEYS[7]
local mine = redis.call('SCARD', tenantBacklog)
if mine >= tenantMaxBacklog then return {'tenant-full', tostring(mine)} end
local backlog = 0
--- @compose backlog-count
if backlog >= maxBacklog then return {'full', tostring(backlog)} end
-- The token is spent only by a submit that is accepted.
if tokens then
  redis.call('HSET', KEYS[6], 'tokens', tostring(tokens[1]), 'ts', tostring(tokens[2]))
  redis.call('PEXPIRE', KEYS[6], math.ceil((tokens[3] - tokens[1]) * 1000 / rate) + 1000)
end
local added = bullmqAdd(addKeys, {ARGV[7], ARGV[8], ARGV[9]})
if type(added) == 'number' and added < 0 then return {'error', tostring(added)} end
redis.call('SADD', tenantBacklog, jobId)
redis.call('HSET', KEYS[2], RECORD.id, jobId, RECORD.tenant, ARGV[4],
  RECORD.userId, ARGV[10], RECORD.reportType, newReportType, RECORD.state, newState,
  RECORD.maxAttempts, newMaxAttempts,
  RECORD.createdAt, ARGV[5], RECORD.filters, ARGV[11], RECORD.priority, ARGV[12],
  RECORD.fingerprint, ARGV[2], unpack(ARGV, 13))
-- The stream is new (the job id is), so its one entry cannot exceed the cap
-- (EVENT_STREAM_MAXLEN is at least 10): no capping (maxLen nil). Nor is it
-- published (channel nil): a watch subscribes to a job it has read, and no
-- one can read a job whose id this call has just drawn.
local traceId = ARGV[6] ~= '' and ARGV[6] or nil
local id = appendEvent(KEYS[3], nil, nil, {EVENT.type, 'queued', EVENT.state, 'queued',
  EVENT.progress, '0', EVENT.phase, '', EVENT.attempt, '0', EVENT.time, ARGV[5]},
  1, 12, nil, traceId)
local score = ARGV[5]
redis.call('ZADD', KEYS[4], score, jobId)
redis.call('ZADD', KEYS[5], score, jobId)
redis.call('SADD', tenantsKey, ARGV[4])
redis.call('ZADD', liveKey, score, jobId)
if idem then
  -- No TTL while the job is live: the job's terminal transition sets it
  -- (apply-transition.lua), to the job's retention or `until`, the later.
  redis.call('HSET', KEYS[1], 'job', jobId, 'fp', ARGV[2], 'until', ARGV[3])
end
return {'new', id}
