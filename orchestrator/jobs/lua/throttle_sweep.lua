-- The throttles' safety net (JobStore.sweep_throttles, each reconcile pass): for every plugin/key in
-- use, drop from its running count the ids whose record no longer runs (a record that expired while
-- running, a count written before Redis lost the finish), bring back the held jobs the limits now let
-- start (a limit raised or removed live, a scout cancelled), and forget keys idle with nothing in them.
-- KEYS     none: the throttle keys are named from the plugin/key list (see throttle.lua)
-- ARGV[1]  now (ms)
-- ARGV[2]  idle ms after which an empty plugin/key is forgotten
-- Returns  {ids dropped from running counts, held jobs brought back}
-- Declared before this body: throttle.lua's functions and constants.
local now_ms, idle_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local dropped, released = 0, 0
local index = T_PREFIX .. 'keys'
for _, k in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local plugin, key = string.match(k, '^([^:]*):(.*)$')
  local run = T_PREFIX .. 'run:' .. k
  for _, id in ipairs(redis.call('ZRANGE', run, 0, -1)) do
    if redis.call('HGET', JOB_PREFIX .. id, 'state') ~= 'running' then
      redis.call('ZREM', run, id)
      dropped = dropped + 1
    end
  end
  released = released + throttle_release(plugin, key)
  if redis.call('EXISTS', run, T_PREFIX .. 'held:' .. k, T_PREFIX .. 'wait:' .. k) == 0
      and tonumber(redis.call('ZSCORE', index, k)) < now_ms - idle_ms then
    redis.call('ZREM', index, k)
    redis.call('DEL', T_PREFIX .. 'gcra:' .. k)
  end
end
return {dropped, released}
