--[[
  Deletes a finished job's record and event log, if the job is still in the
  finished index (a job retried meanwhile has left it and is kept).

  Input:
    KEYS[1] finished index
    KEYS[2] job record
    KEYS[3] event stream

    ARGV[1] job id

  Output:
    the job's report type (its BullMQ job and file go next)
    nil  the job was not in the index (retried, or already gone)
]]
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local kind = redis.call('HGET', KEYS[2], RECORD.reportType)
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
return kind
