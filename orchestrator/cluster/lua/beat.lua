-- Renew this instance's heartbeat and registry entry; tell whether the entry was still there (Heartbeat.beat).
-- KEYS[1]  this instance's heartbeat key
-- KEYS[2]  instances hash: instance id -> info JSON
-- ARGV[1]  instance id
-- ARGV[2]  now (s)
-- ARGV[3]  heartbeat ttl ms
-- ARGV[4]  info JSON
-- Returns  1 (it was registered) or 0 (another instance reaped it: we were presumed dead)
local heartbeat, instances = KEYS[1], KEYS[2]
local instance, now, ttl, info = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local present = redis.call('HEXISTS', instances, instance)
redis.call('SET', heartbeat, now, 'PX', ttl)
redis.call('HSET', instances, instance, info)
return present
