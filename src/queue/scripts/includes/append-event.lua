--[[
  Appends an event to a job's stream and publishes it on the job's channel.
  The one body that writes event streams: apply-transition.lua,
  apply-attempt.lua and submit.lua include it. The published message is the
  JSON list of the entry id and the list of the entry's field/value pairs
  (events/event-hub.ts decodes it), made by concatenation from the caller's
  JSON text of the pairs: no Lua table is built or encoded here. traceIdOf
  reads a traceparent's trace id.

  Input:
    streamKey  the job's event stream
    channel    the job's event channel (the watch hub's); nil: not published
               (a new job's first event, which no one can be watching)
    maxLen     how many entries the stream keeps; nil: not capped now (a
               script appending several events in one call caps the stream
               with its last: it ends as after capping each, the oldest
               entries above the cap gone, and no reader sees it in between)
    fields     a list holding the event's field/value pairs (event-codec.ts),
               without a trace id, from fields[first] to fields[last]
    first, last
    json       the JSON text of those pairs as a list, without its brackets
               (event-codec.ts encodeEventJson): the same strings; nil when
               not published
    traceId    the trace id of the job's current run, or nil: appended as the
               last pair of the entry and of the message (it overwrites
               fields[last + 1] and fields[last + 2]); hex digits only, so
               it needs no escaping

  Output:
    the new entry's id
]]
local function appendEvent(streamKey, channel, maxLen, fields, first, last, json, traceId)
  if traceId then
    fields[last + 1] = EVENT.traceId
    fields[last + 2] = traceId
    last = last + 2
  end
  local id = redis.call('XADD', streamKey, '*', unpack(fields, first, last))
  -- Cap the stream with XDEL rather than XADD MAXLEN: trimming does not move
  -- the stream's max-deleted-entry-id (Redis 7.0), which replay relies on to
  -- refuse a cursor into deleted history.
  local excess = maxLen and redis.call('XLEN', streamKey) - tonumber(maxLen) or 0
  if excess > 0 then
    local old = redis.call('XRANGE', streamKey, '-', '+', 'COUNT', excess)
    local ids = {}
    for i = 1, #old do ids[i] = old[i][1] end
    redis.call('XDEL', streamKey, unpack(ids))
  end
  if channel then
    local tail = traceId and ',"' .. EVENT.traceId .. '","' .. traceId .. '"' or ''
    redis.call('SPUBLISH', channel, '["' .. id .. '",[' .. json .. tail .. ']]')
  end
  return id
end

-- The trace id of a W3C traceparent (00-<trace id>-<span id>-<flags>), or
-- nil (no traceparent, or a malformed one).
local function traceIdOf(traceparent)
  if not traceparent then return nil end
  return string.match(traceparent, '^%x%x%-(%x+)%-')
end
