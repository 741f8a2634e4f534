-- Give the leader lease up on a clean shutdown, so another instance need not wait for the TTL (LeaderLease.resign).
-- KEYS[1]  leader hash
-- ARGV[1]  this instance's id
-- ARGV[2]  the token it leads with
-- Returns  1 when the lease was ours and is gone, 0 otherwise
local leader, instance, token = KEYS[1], ARGV[1], ARGV[2]
if redis.call('HGET', leader, 'instance') == instance and redis.call('HGET', leader, 'token') == token then
  return redis.call('DEL', leader)
end
return 0
