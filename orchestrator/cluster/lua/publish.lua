-- Publish a leader-only component's status, so every instance's /status shows it (LeaderLease.publish);
-- fenced like any leader-only write.
-- KEYS[1]  leader hash, for the fence
-- KEYS[2]  component-status hash: component -> status JSON
-- ARGV[1]  fence token
-- ARGV[2]  component name
-- ARGV[3]  its status JSON
-- Returns  1, or the fence's error reply (the token is stale: nothing written)
-- Declared before this body: fence_check.
local leader, statuses = KEYS[1], KEYS[2]
local fence, name, status = ARGV[1], ARGV[2], ARGV[3]
local refused = fence_check(leader, fence)
if refused then return refused end
redis.call('HSET', statuses, name, status)
return 1
