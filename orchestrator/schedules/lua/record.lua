-- Record what happened to schedule slots: state fields, counter increments and history entries,
-- in one atomic, fenced step (ScheduleStore.record).
-- KEYS[1]   leader hash, for the fence
-- KEYS[2]   state hash: <id>|<field>
-- KEYS[3]   stats hash: <id>|<counter>
-- KEYS[..]  per history entry, 1: the schedule's history list
-- ARGV[1]   fence token, or '' for a write that is not leader-only
-- ARGV[2]   how many entries a history list keeps
-- ARGV[3]   S, how many state fields
-- ARGV[..]  S field, value pairs for the state hash
-- ARGV[..]  C, then C field, increment pairs for the stats hash
-- ARGV[..]  per history entry, 1: its JSON
-- Returns   1, or the fence's error reply (the token is stale: nothing written)
-- Declared before this body: fence_check, the cursor (take_keys, take_args, args_left).
local leader, state, stats = take_keys(3)
local fence, history_max, s = take_args(3)
local refused = fence_check(leader, fence)
if refused then return refused end
s = tonumber(s)
if s > 0 then redis.call('HSET', state, take_args(2 * s)) end
for _ = 1, tonumber(take_args(1)) do
  local field, by = take_args(2)
  redis.call('HINCRBY', stats, field, by)
end
while args_left() > 0 do
  local history = take_keys(1)
  local entry = take_args(1)
  redis.call('LPUSH', history, entry)
  redis.call('LTRIM', history, 0, tonumber(history_max) - 1)
end
return 1
