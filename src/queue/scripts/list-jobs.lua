--[[
  One ListJobs page from a tenant's (or user's) index, newest first by
  (created ms, id), after a cursor. Index entries whose record expired are
  removed as they are met.

  Input:
    KEYS[1] the tenant or user index (sorted set, score: created ms)

    ARGV[1] job record key prefix (the job id follows)
    ARGV[2] max score: "+inf", or the cursor's score
    ARGV[3] cursor id ("" for none)
    ARGV[4] page size
    ARGV[5] states to keep: ",a,b," ("" keeps all)
    ARGV[6] scan budget: at most this many index entries looked at

  Output:
    {done, lastScore, lastId, record...}: each record an HGETALL reply;
    done = 1 when the index has nothing after the page
]]
local pageSize = tonumber(ARGV[4])
local budget = tonumber(ARGV[6])
local states = ARGV[5]
local cursorScore = ARGV[2]
local cursorId = ARGV[3]
local out = {}
local stale = {}
local lastScore, lastId = '', ''
local offset, scanned, done = 0, 0, 0
while true do
  local items = redis.call('ZREVRANGEBYSCORE', KEYS[1], cursorScore, '-inf', 'WITHSCORES', 'LIMIT', offset, 100)
  if #items == 0 then done = 1 break end
  offset = offset + #items / 2
  for i = 1, #items, 2 do
    local id, score = items[i], items[i + 1]
    if not (cursorId ~= '' and score == cursorScore and id >= cursorId) then
      if #out >= pageSize or scanned >= budget then
        return {0, lastScore, lastId, unpack(out)}
      end
      scanned = scanned + 1
      lastScore, lastId = score, id
      local rec = redis.call('HGETALL', ARGV[1] .. id)
      if #rec == 0 then
        stale[#stale + 1] = id
      else
        local state = ''
        for j = 1, #rec, 2 do if rec[j] == RECORD.state then state = rec[j + 1] end end
        if states == '' or string.find(states, ',' .. state .. ',', 1, true) then out[#out + 1] = rec end
      end
    end
  end
end
if #stale > 0 then redis.call('ZREM', KEYS[1], unpack(stale)) end
return {done, lastScore, lastId, unpack(out)}
