--[[
  Appends an event to a job's stream and publishes it on the job's channel.
  The one body that writes event streams: apply-transition.lua and submit.lua
  include it.

  Input:
    recordKey  the job record; its traceparent gives the event's trace id
    streamKey  the job's event stream
    channel    the job's event channel (the watch hub's)
    maxLen     how many entries the stream keeps
    ev         the event's field/value list (event-codec.ts), without a trace id

  Output:
    the new entry's id
]]
local function appendEvent(recordKey, streamKey, channel, maxLen, ev)
  -- Every event carries the trace id of the job's current run (from the
  -- record's traceparent "00-<trace id>-<span id>-<flags>").
  local tp = redis.call('HGET', recordKey, RECORD.traceparent)
  if tp then
    local tr = string.match(tp, '^%x%x%-(%x+)%-')
    if tr then
      ev[#ev + 1] = EVENT.traceId
      ev[#ev + 1] = tr
    end
  end
  local id = redis.call('XADD', streamKey, '*', unpack(ev))
  -- Cap the stream with XDEL rather than XADD MAXLEN: trimming does not move
  -- the stream's max-deleted-entry-id (Redis 7.0), which replay relies on to
  -- refuse a cursor into deleted history.
  local excess = redis.call('XLEN', streamKey) - tonumber(maxLen)
  if excess > 0 then
    local old = redis.call('XRANGE', streamKey, '-', '+', 'COUNT', excess)
    local ids = {}
    for i = 1, #old do ids[i] = old[i][1] end
    redis.call('XDEL', streamKey, unpack(ids))
  end
  redis.call('SPUBLISH', channel, cjson.encode({id, ev}))
  return id
end
