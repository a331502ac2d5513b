--[[
  Takes a job out of the index of live jobs if its entry is still the one a
  reader saw (same score: no transition since), for entries whose record is
  gone or terminal. A job that changed meanwhile keeps its entry.

  Input:
    KEYS[1] index of live jobs

    ARGV[1] job id
    ARGV[2] the score the entry had when read

  Output:
    1  removed
    0  the entry changed (or is gone): nothing removed
]]
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
