-- Write (or delete) schedule definitions and announce the change (ScheduleStore.put).
-- KEYS[1]   leader hash, for the fence
-- KEYS[2]   definitions hash: id -> JSON
-- KEYS[3]   version counter
-- KEYS[4]   state hash: <id>|<field>
-- KEYS[5]   stats hash: <id>|<counter>
-- KEYS[..]  per id, 1: its history list
-- ARGV[1]   fence token, or '' for a write that is not leader-only (a user's)
-- ARGV[2]   the changed channel
-- ARGV[3]   N, how many ids
-- ARGV[..]  per id, 2: id, definition JSON ('' deletes the definition, its state, counters and history)
-- Returns   the new version, or the fence's error reply (the token is stale: nothing written)
-- Declared before this body: fence_check, the cursor (take_keys, take_args), STATE_FIELDS,
-- COUNTERS and FIELD_SEPARATOR (schedules/store.py field_of).
local leader, definitions, version, state, stats = take_keys(5)
local fence, channel, n = take_args(3)
local refused = fence_check(leader, fence)
if refused then return refused end

local function fields_of(id, names)
  local out = {}
  for i, name in ipairs(names) do out[i] = id .. FIELD_SEPARATOR .. name end
  return out
end

for _ = 1, tonumber(n) do
  local id, raw = take_args(2)
  local history = take_keys(1)
  if raw == '' then
    redis.call('HDEL', definitions, id)
    redis.call('HDEL', state, unpack(fields_of(id, STATE_FIELDS)))
    redis.call('HDEL', stats, unpack(fields_of(id, COUNTERS)))
    redis.call('DEL', history)
  else
    redis.call('HSET', definitions, id, raw)
  end
end
local v = redis.call('INCR', version)
redis.call('PUBLISH', channel, v)
return v
