--[[
  Flags a running job for cancellation and tells every worker (the worker
  running it aborts the attempt and records CANCELLED).

  Input:
    KEYS[1] job record

    ARGV[1] the cancel reason
    ARGV[2] the workers' control channel
    ARGV[3] job id

  Output:
    1  flagged
    0  the job is no longer running
]]
if redis.call('HGET', KEYS[1], RECORD.state) ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], RECORD.cancelRequested, ARGV[1])
redis.call('SPUBLISH', ARGV[2], ARGV[3])
return 1
