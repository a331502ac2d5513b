--[[
  Completes an attempt in one step: applies its SUCCEEDED transition
  (apply-transition.lua) together with BullMQ's moveToFinished of the job
  (which also fetches the worker's next job), all or nothing. The worker runs
  it where BullMQ would run moveToFinished alone, so a job's end costs one
  script call and one round trip instead of two. Every check of ours comes
  before the first write, and BullMQ's checks before its own writes, so a
  refused call changes nothing.

  The slots are filled by queue/complete-with-transition.ts:
  `apply-transition` with apply-transition.lua, `bullmq-finish` with BullMQ's
  moveToFinished script.

  Input:
    KEYS[1] .. KEYS[b]  BullMQ's moveToFinished keys (b = ARGV[1])
    KEYS[b+1] ..        apply-transition.lua's keys (its KEYS[5] is the lock
                        that BullMQ's moveToFinished releases)

    ARGV[1] b, how many keys BullMQ's moveToFinished takes
    ARGV[2] a, how many arguments BullMQ's moveToFinished takes
    ARGV[3 .. 2+a]  BullMQ's moveToFinished arguments (its token is the
                    attempt's lock token)
    ARGV[3+a ..]    apply-transition.lua's arguments

  Output:
    {'ok', entry id, next}   applied; `next` is moveToFinished's reply (0, or
                             the next job BullMQ fetched for the worker)
    {'refused', code, state} apply-transition.lua refused (its reply {code,
                             state}): nothing changed
    {'bullmq', code}         BullMQ's moveToFinished refused (its negative
                             code): nothing of ours changed
]]
--- @include "includes/transition-checks"

local function applyTransition(KEYS, ARGV)
--- @compose apply-transition
end
local function bullmqFinish(KEYS, ARGV)
--- @compose bullmq-finish
end

local b, a = tonumber(ARGV[1]), tonumber(ARGV[2])
local bkeys, bargs, tkeys, targs = {}, {}, {}, {}
for i = 1, b do bkeys[i] = KEYS[i] end
for i = b + 1, #KEYS do tkeys[#tkeys + 1] = KEYS[i] end
for i = 1, a do bargs[i] = ARGV[2 + i] end
for i = 3 + a, #ARGV do targs[#targs + 1] = ARGV[i] end

local refused = checkTransition(tkeys, targs)
if refused then
  if refused.err then return refused end
  return {'refused', refused[1], refused[2]}
end
local finished = bullmqFinish(bkeys, bargs)
if type(finished) == 'number' and finished < 0 then return {'bullmq', finished} end
-- moveToFinished released the lock checked above: the transition's own lock
-- check would now refuse it. Its other checks run again, and pass.
targs[10] = ''
local applied = applyTransition(tkeys, targs)
if applied.err then return applied end
-- Checked above already: a refusal here would be a bug, said as such.
if applied[1] ~= 1 then return redis.error_reply('ERR SUCCEEDED refused after completing') end
return {'ok', applied[2], finished}
