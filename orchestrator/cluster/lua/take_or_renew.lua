-- Take the leader lease if nobody holds it, or renew it if we hold it with the token we know (LeaderLease).
-- KEYS[1]  leader hash {instance, token, since}, with the lease's TTL
-- KEYS[2]  epoch counter: the fencing tokens, that only grow
-- ARGV[1]  this instance's id
-- ARGV[2]  now (s)
-- ARGV[3]  lease ttl ms
-- ARGV[4]  the token we lead with, or '' when we do not lead
-- Returns  {1, token, since} when we hold the lease afterwards, {0, token or false, holder or false} otherwise
local leader, epoch = KEYS[1], KEYS[2]
local instance, now, ttl, ours = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local holder = redis.call('HGET', leader, 'instance')
local token = redis.call('HGET', leader, 'token')
if ours ~= '' then
  if holder == instance and token == ours then
    redis.call('PEXPIRE', leader, ttl)
    return {1, token, redis.call('HGET', leader, 'since')}
  end
  -- We led, but the key expired or moved on: leadership is lost even if nobody holds it now,
  -- so the caller stops its leader-only work before it tries again with a new token.
  return {0, token, holder}
end
if holder then return {0, token, holder} end
token = redis.call('INCR', epoch)
redis.call('HSET', leader, 'instance', instance, 'token', token, 'since', now)
redis.call('PEXPIRE', leader, ttl)
return {1, tostring(token), now}
