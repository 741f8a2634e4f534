-- Claim the ready jobs a worker read from its queue (JobStore.claim reads them first, so that every
-- key this script touches is declared in KEYS). Each one is re-checked here: still due, not claimed
-- by anyone (arq's in-progress key, set NX), its record not final. The claim id written on the
-- record fences the finish: an outcome is accepted only from the claim that is current.
-- KEYS[1]   queue zset
-- KEYS[2]   state:queued zset
-- KEYS[3]   state:deferred zset
-- KEYS[4]   state:running zset
-- KEYS[5]   offers hash of the queue
-- KEYS[..]  per candidate, 3: arq in-progress key, record hash, arq job
-- ARGV[1]   now (s)
-- ARGV[2]   now (ms): due means a queue score at most this
-- ARGV[3]   instance id
-- ARGV[4]   in-progress ttl ms
-- ARGV[5]   claim id
-- ARGV[6]   mode: 'ids' (claim the candidates) or 'head' (the one candidate, if it is the head)
-- ARGV[7]   look-ahead ms (head mode: how far to look for the next deferred job)
-- ARGV[8]   this worker's push channel, or '' when it offers no slots
-- ARGV[9..] candidate ids
-- Returns   {claimed?, more ready?, next due ms or nil, id, fields, id, fields, ...} (fields in
--           CLAIM_FIELDS order); claimed? is 0 only in head mode, when the candidate was not the head;
--           more ready? is 1 in 'ids' mode when a throttle held a candidate back (look again)
--
-- In 'head' mode the one candidate is the id an enqueue's wake-up named, not read first: it is
-- claimed only when it is the queue's first ready entry (so priorities hold), and the reply then
-- says what the skipped read would have: whether more are ready, and when the next deferred one is due.
-- A worker that offers slots for pushes (enqueue.lua) passes its channel: the jobs it claims here
-- take that many slots out of its offer.
-- Declared before this body: the cursor (take_keys, take_args, args_left), CLAIM_FIELDS, CLAIMED_OFFSET_MS,
-- and throttle.lua's functions.
local queue, queued, deferred, running, offers = take_keys(5)
local now_s, now_ms, instance, progress_ttl, claim, mode, look_ahead, channel = take_args(8)
local ids = {take_args(args_left())}
local head = mode == 'head'
if head and redis.call('ZRANGEBYSCORE', queue, '-inf', now_ms, 'LIMIT', 0, 1)[1] ~= ids[1] then
  return {0, 1, false}
end
local out = {1, 0, false}
for _, id in ipairs(ids) do
  local progress, rec, job = take_keys(3)
  local score = redis.call('ZSCORE', queue, id)
  -- throttle.lua: a job its plugin's limits hold back leaves the ready range; the worker looks again
  if score and tonumber(score) <= tonumber(now_ms) and throttle_held(queue, id, score, rec, progress, now_ms) then
    score, out[2] = nil, 1
  end
  if score and tonumber(score) <= tonumber(now_ms) and redis.call('SET', progress, '1', 'NX', 'PX', progress_ttl) then
    local st = redis.call('HGET', rec, 'state')
    if st == 'queued' or st == 'deferred' then
      local attempt = redis.call('HINCRBY', rec, 'attempt', 1)
      redis.call('HSET', rec, 'state', 'running', 'started_at', now_s, 'instance', instance, 'claim', claim)
      if attempt > 1 then
        redis.call('HDEL', rec, 'finished_at', 'duration_s', 'exit_code', 'error', 'error_type', 'traceback')
      end
      redis.call('ZREM', st == 'queued' and queued or deferred, id)
      redis.call('ZADD', running, now_s, id)
      -- Out of the ready range while it runs, so pollers never read past running jobs; the
      -- offset is taken back when it is put back (shutdown, dead instance).
      redis.call('ZINCRBY', queue, CLAIMED_OFFSET_MS, id)
      out[#out + 1] = id
      out[#out + 1] = redis.call('HMGET', rec, unpack(CLAIM_FIELDS))
    else
      -- the record expired or is final (cancelled): this queue entry is an orphan
      redis.call('ZREM', queue, id)
      redis.call('DEL', job, progress)
    end
  end
end
local claimed = (#out - 3) / 2
if channel ~= '' and claimed > 0 then
  local offered = tonumber(redis.call('HGET', offers, channel))
  if offered then redis.call('HSET', offers, channel, math.max(offered - claimed, 0)) end
end
if head then
  out[2] = #redis.call('ZRANGEBYSCORE', queue, '-inf', now_ms, 'LIMIT', 0, 1)
  local upcoming = redis.call('ZRANGEBYSCORE', queue, '(' .. now_ms, tonumber(now_ms) + tonumber(look_ahead),
    'WITHSCORES', 'LIMIT', 0, 1)
  if upcoming[2] then out[3] = upcoming[2] end
end
return out
