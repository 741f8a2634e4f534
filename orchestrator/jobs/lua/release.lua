-- Put back the jobs a dead instance was running (JobStore.release_instance reads which first):
-- arq's in-progress key would otherwise hold them until it expires. The owner is checked again
-- here; a running entry whose record expired is dropped. Then the instance is forgotten.
-- KEYS[1]   state:running zset
-- KEYS[2]   state:queued zset
-- KEYS[3]   instances hash
-- KEYS[4]   the instance's heartbeat key
-- KEYS[..]  per job, 3: arq in-progress key, record hash, queue zset
-- ARGV[1]   instance id
-- ARGV[2]   now (s)
-- ARGV[..]  per job, 2: id, the queue's wake channel
-- Returns   the released job ids
-- Declared before this body: the cursor (take_keys, take_args, args_left), CLAIMED_OFFSET_MS, throttle.lua's
-- functions.
local running, queued, instances, heartbeat = take_keys(4)
local instance, now = take_args(2)
local released = {}
while args_left() > 0 do
  local id, wake = take_args(2)
  local progress, rec, queue = take_keys(3)
  local owner = redis.call('HGET', rec, 'instance')
  if owner == instance or owner == false then
    throttle_leave(rec, id)  -- throttle.lua: its place in the running count frees
    redis.call('DEL', progress)
    redis.call('ZREM', running, id)
    if owner == instance and redis.call('HGET', rec, 'state') == 'running' then
      redis.call('HINCRBY', rec, 'attempt', -1)
      redis.call('HDEL', rec, 'claim')
      redis.call('HSET', rec, 'state', 'queued', 'interrupted', now)
      redis.call('ZADD', queued, now, id)
      redis.call('ZINCRBY', queue, -CLAIMED_OFFSET_MS, id)
      redis.call('PUBLISH', wake, id)
      released[#released + 1] = id
    end
  end
end
redis.call('HDEL', instances, instance)
redis.call('DEL', heartbeat)
return released
