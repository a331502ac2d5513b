--[[
  Applies one job transition together with BullMQ's side of it, all or
  nothing: removes BullMQ's job, adds it anew, or both (CancelJob, RetryJob,
  the reconciler's repairs). Every check comes before the first write, so a
  refused call changes nothing.

  The slots are filled by queue/queue-transitions.ts: `apply-transition` with
  apply-transition.lua, `bullmq-remove` with BullMQ's removeJob script and
  `bullmq-add` with BullMQ's add script of the job's kind (or a stub when
  nothing is added): one composed script per add script.

  Input:
    KEYS[1] BullMQ's job hash
    KEYS[2] BullMQ's lock of the job
    KEYS[3] index of live jobs
    KEYS[4 .. 3+p.tk] apply-transition.lua's keys
    then p.rk keys of BullMQ's removeJob, then p.ak keys of BullMQ's add

    ARGV[1] JSON parameters p:
            jobId
            from      the states the job must be in (comma list)
            score     (optional) the job's score in the live index must still
                      be this: the job has not changed since it was looked at
            bull      (optional) what BullMQ's job must still be: "absent"
                      (no job hash), or the job's finishedOn (ms) when it was
                      seen finished
            remove    "no"; "unlocked" (remove BullMQ's job unless a worker
                      holds it: that worker sees the new state and lets it
                      go); "required" (refuse while a worker holds it)
            add       true: add BullMQ's job anew (after the removal)
            tk, ta    how many keys and arguments apply-transition.lua takes
            rk, ra    the same for BullMQ's removeJob
            ak, aa    the same for BullMQ's add
    ARGV[2 ..] apply-transition.lua's ARGV, then removeJob's, then the add's

  Output:
    {'ok', entry id}   applied
    {'not-from', state} the job is not in one of the `from` states ("" when
                       there is no record): nothing changed
    {'moved', state}   the job or BullMQ's job changed since it was looked at
                       (score, bull): nothing changed
    {'busy', state}    a worker holds BullMQ's job (remove "required"):
                       nothing changed
    {'error', code}    BullMQ's add refused (its code)
]]
local function applyTransition(KEYS, ARGV)
--- @compose apply-transition
end
local function bullmqRemove(KEYS, ARGV)
--- @compose bullmq-remove
end
local function bullmqAdd(KEYS, ARGV)
--- @compose bullmq-add
end

local p = cjson.decode(ARGV[1])
local function part(list, first, n)
  local out = {}
  for i = 1, n do out[i] = list[first + i - 1] end
  return out
end
local tkeys = part(KEYS, 4, p.tk)
local rkeys = part(KEYS, 4 + p.tk, p.rk)
local akeys = part(KEYS, 4 + p.tk + p.rk, p.ak)
local targs = part(ARGV, 2, p.ta)
local rargs = part(ARGV, 2 + p.ta, p.ra)
local aargs = part(ARGV, 2 + p.ta + p.ra, p.aa)

-- Checks.
local state = redis.call('HGET', tkeys[1], RECORD.state)
if not state then return {'not-from', ''} end
if not string.find(',' .. p.from .. ',', ',' .. state .. ',', 1, true) then
  return {'not-from', state}
end
if p.score and redis.call('ZSCORE', KEYS[3], p.jobId) ~= p.score then
  return {'moved', state}
end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if p.bull == 'absent' then
  if exists then return {'moved', state} end
elseif p.bull then
  if redis.call('HGET', KEYS[1], 'finishedOn') ~= p.bull then return {'moved', state} end
end
local locked = redis.call('EXISTS', KEYS[2]) == 1
if locked and p.remove == 'required' then return {'busy', state} end

-- Writes.
if exists and not locked and p.remove ~= 'no' then
  local removed = bullmqRemove(rkeys, rargs)
  if removed ~= 1 then return {'busy', state} end
end
if p.add then
  local added = bullmqAdd(akeys, aargs)
  if type(added) == 'number' and added < 0 then return {'error', tostring(added)} end
end
local applied = applyTransition(tkeys, targs)
if applied.err then return applied end
-- Checked above already: a refusal here would be a bug, said as such.
if applied[1] ~= 1 then return {'not-from', applied[2]} end
return {'ok', applied[2]}
