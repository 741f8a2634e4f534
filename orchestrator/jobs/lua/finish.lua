-- Leave `running` (JobStore.finish), only for the claim that is current: a late outcome from an
-- instance whose claim was released (it was presumed dead, and another runs the job now) is refused.
-- KEYS[1]    record hash
-- KEYS[2]    state:running zset
-- KEYS[3]    the new state's zset
-- KEYS[4]    arq in-progress key
-- KEYS[5]    arq job
-- KEYS[6]    queue zset
-- KEYS[7]    offers hash of the queue
-- KEYS[8]    log stream: kept while the job waits again, the result TTL from a final state
-- ARGV[1]    job id
-- ARGV[2]    now (s): the score in the new state's zset
-- ARGV[3]    ttl ms of a final record
-- ARGV[4]    mode: 'final', 'retry' or 'putback'
-- ARGV[5]    the new queue score (retry)
-- ARGV[6]    the job's done channel
-- ARGV[7]    claim id the outcome was made under
-- ARGV[8]    the queue's wake channel
-- ARGV[9]    this worker's push channel, or '' (the job held no slot of an offer)
-- ARGV[10..] field, value, ... to write on the record
-- Returns    1, or 0 when the claim is no longer current (nothing written)
--
-- A job back in its queue (a retry, a put-back) is announced on the queue's wake channel like an
-- enqueue: an idle worker learns when it is due instead of at its next idle tick. A worker that
-- offers slots for pushes passes its channel: the slot this job held goes back into its offer.
-- Declared before this body: CLAIMED_OFFSET_MS, throttle.lua's functions, and workflow_step_ended
-- (lua/workflow.lua).
local rec, running, new_state, progress, job, queue, offers, log = unpack(KEYS, 1, 8)
local id, now, ttl, mode, retry_score, done_channel, claim, wake, channel = unpack(ARGV, 1, 9)
if redis.call('HGET', rec, 'claim') ~= claim then return 0 end
redis.call('HDEL', rec, 'claim')
throttle_leave(rec, id)  -- throttle.lua: its place in the running count frees
redis.call('HSET', rec, unpack(ARGV, 10))  -- the fields, from ARGV[10] on
if channel ~= '' and redis.call('HEXISTS', offers, channel) == 1 then redis.call('HINCRBY', offers, channel, 1) end
redis.call('ZREM', running, id)
redis.call('ZADD', new_state, now, id)
redis.call('DEL', progress)
if mode == 'final' then
  redis.call('PEXPIRE', rec, ttl)
  redis.call('PEXPIRE', log, ttl)
  redis.call('DEL', job)
  redis.call('ZREM', queue, id)
  -- the record rides along: a waiter needs no second read
  local record = cjson.encode(redis.call('HGETALL', rec))
  redis.call('PUBLISH', done_channel, record)
  local notify = redis.call('HGET', rec, 'notify')
  if notify then redis.call('PUBLISH', notify, id .. '\n' .. record) end  -- id first: read without decoding
elseif mode == 'retry' then
  redis.call('PERSIST', log)  -- it lives as long as the job, however long the job waits
  redis.call('ZADD', queue, 'XX', retry_score, id)
  redis.call('PUBLISH', wake, id)
else
  redis.call('PERSIST', log)
  redis.call('ZINCRBY', queue, -CLAIMED_OFFSET_MS, id)
  redis.call('PUBLISH', wake, id)
end
-- Workflows: a final step advances its workflow in this same step, behind the claim fence above.
if mode == 'final' then workflow_step_ended(rec, now, ttl) end
return 1
