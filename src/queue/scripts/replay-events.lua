--[[
  Reads a job's retained events after a cursor, with what a watcher needs to
  trust them: the job's tenant and state, the stream's max-deleted-entry-id
  (a cursor before it points into deleted history) and its
  last-generated-id (a cursor after it is ahead of the log: no id the log
  handed out).

  Input:
    KEYS[1] job record
    KEYS[2] event stream

    ARGV[1] XRANGE start ("-", or "(" and the cursor)
    ARGV[2] at most this many entries

  Output:
    {tenant, max-deleted-entry-id, entries, state, last-generated-id}
    {""}  the job is unknown
]]
local tenant = redis.call('HGET', KEYS[1], RECORD.tenant)
if not tenant then return {''} end
local maxDeleted, lastGenerated = '0-0', '0-0'
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then maxDeleted = info[i + 1] end
    if info[i] == 'last-generated-id' then lastGenerated = info[i + 1] end
  end
end
return {tenant, maxDeleted, redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2]),
  redis.call('HGET', KEYS[1], RECORD.state), lastGenerated}
