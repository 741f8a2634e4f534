-- fence_check(leader_key, token): the fencing check of every leader-only write (redis/fence.py).
-- KEYS     none of its own: the caller passes the leader hash (a fenced script's KEYS[1])
-- ARGV     none of its own: the caller passes the fence token, '' when the write is not leader-only
-- Returns  (the function) an error reply starting with FENCED_REPLY when the token is not the
--          lease's current one, for the script to return at once; nil when the write may go on.
-- Needs    FENCED_REPLY (declared before it, from redis/fence.py).
local function fence_check(leader_key, token)
  if token ~= '' and redis.call('HGET', leader_key, 'token') ~= token then
    return redis.error_reply(FENCED_REPLY .. ' stale leader token ' .. token)
  end
  return nil
end
