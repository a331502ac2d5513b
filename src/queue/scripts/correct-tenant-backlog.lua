--[[
  Corrects one batch of a tenant's backlog set: removes the members whose job
  record is gone or no longer in a backlog state. The submit and transition
  scripts keep the set exact; this catches what they cannot see, such as a
  record deleted by hand or lost with Redis data, so a tenant's count cannot
  stay wrong. Checking and removing in one script, a job re-queued meanwhile
  is never removed.

  Input:
    KEYS[1] the tenant's backlog set

    ARGV[1] SSCAN cursor ("0" to start)
    ARGV[2] batch size (SSCAN COUNT)
    ARGV[3] job record key prefix
    ARGV[4] the backlog states: a comma list

  Output:
    {next cursor ("0": the walk is done), members removed}
]]
local scan = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local removed = 0
for _, id in ipairs(scan[2]) do
  local state = redis.call('HGET', ARGV[3] .. id, RECORD.state)
  if not state or not string.find(',' .. ARGV[4] .. ',', ',' .. state .. ',', 1, true) then
    redis.call('SREM', KEYS[1], id)
    removed = removed + 1
  end
end
return {scan[1], removed}
