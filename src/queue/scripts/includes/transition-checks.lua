--[[
  The checks of apply-transition.lua, before any write: the job's state, and
  for a write of an attempt BullMQ's lock and the attempt's fencing token. A
  script that runs apply-transition.lua inside itself after other writes
  (complete-with-transition.lua) checks first with the same body.

  Input:
    KEYS, ARGV  apply-transition.lua's (see its header)

  Output:
    nil, state  the transition may be applied; `state` is the job's
    {0, state}  refused: the job's state is not allowed ("" when there is no record)
    {-1, state} refused: the record holds another attempt's token
    {-2, state} refused: BullMQ's lock on the job is gone or another fetch's
    an error reply when the job's idempotency record is needed but not given
]]
local function checkTransition(KEYS, ARGV)
  local state = redis.call('HGET', KEYS[1], RECORD.state)
  if not state then return {0, ''} end
  if not string.find(',' .. ARGV[3] .. ',', ',' .. state .. ',', 1, true) then
    return {0, state}
  end
  -- The lock first: an attempt whose lock expired is refused even while the
  -- record still holds its token (no other attempt has started yet).
  if ARGV[10] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[10] then
    return {-2, state}
  end
  if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], RECORD.attemptToken) ~= ARGV[4] then
    return {-1, state}
  end
  -- Only a transition that sets the retention touches the idempotency record.
  if not KEYS[8] and tonumber(ARGV[5]) ~= 0
      and redis.call('HEXISTS', KEYS[1], RECORD.idempotencyKeyDigest) == 1 then
    return redis.error_reply('ERR the job has an idempotency record: pass it as KEYS[8]')
  end
  return nil, state
end
