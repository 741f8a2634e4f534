-- Cancel a job (JobStore.cancel): a waiting one at once, a running one by asking its worker.
-- KEYS[1]  record hash
-- KEYS[2]  arq job
-- KEYS[3]  queue zset
-- KEYS[4]  arq in-progress key: the job runs
-- KEYS[5]  state:queued zset
-- KEYS[6]  state:deferred zset
-- KEYS[7]  state:cancelled zset
-- KEYS[8]  arq's abort zset: the running job's worker stops it
-- KEYS[9]  log stream (an earlier attempt's): the result TTL from now
-- ARGV[1]  job id
-- ARGV[2]  now (s)
-- ARGV[3]  ttl ms of the final record
-- ARGV[4]  the job's done channel
-- ARGV[5]  the cancel channel
-- Returns  'cancelled' (it was waiting), 'cancelling' (it runs), its final state, or 'missing'
-- Declared before this body: workflow_step_ended (lua/workflow.lua).
local rec, job, queue, progress, queued, deferred, cancelled, abort, log = unpack(KEYS, 1, 9)
local id, now, ttl, done_channel, cancel_channel = unpack(ARGV, 1, 5)
local st = redis.call('HGET', rec, 'state')
if not st then return 'missing' end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return st end
if redis.call('EXISTS', progress) == 0 then
  redis.call('ZREM', queue, id)
  redis.call('DEL', job)
  redis.call('HSET', rec, 'state', 'cancelled', 'finished_at', now, 'error', 'cancelled before it started')
  redis.call('PEXPIRE', rec, ttl)
  redis.call('PEXPIRE', log, ttl)
  redis.call('ZREM', queued, id)
  redis.call('ZREM', deferred, id)
  redis.call('ZADD', cancelled, now, id)
  local record = cjson.encode(redis.call('HGETALL', rec))
  redis.call('PUBLISH', done_channel, record)
  local notify = redis.call('HGET', rec, 'notify')
  if notify then redis.call('PUBLISH', notify, id .. '\n' .. record) end  -- id first: read without decoding
  -- Workflows: a cancelled step fails its workflow (or is an error entry of its group).
  workflow_step_ended(rec, now, ttl)
  return 'cancelled'
end
redis.call('HSET', rec, 'cancel_requested', '1')
redis.call('ZADD', abort, math.floor(now * 1000), id)
redis.call('PUBLISH', cancel_channel, id)
return 'cancelling'
