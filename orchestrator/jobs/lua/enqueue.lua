-- Enqueue N jobs (JobStore.enqueue_many: one for a trigger, many for a batch or a change-capture
-- round) and, optionally, write a checkpoint hash in the same atomic step, all refused when a
-- leader-only fence is stale. A job whose id exists is skipped, one whose plugin was disabled
-- meanwhile too. The checkpoint may carry stream entries (the search-index sink's actions, `d` =
-- JSON), XADDed in the same step, so a position is never written without the actions it accounts for.
-- KEYS[1]   leader hash, for the fence
-- KEYS[2]   plugin-enabled hash: plugin -> '0' when disabled
-- KEYS[3]   all-jobs zset
-- KEYS[4]   the checkpoint hash, present only when C > 0
-- KEYS[..]  S stream keys: the checkpoint's streams, slots 1..S
-- KEYS[..]  per job, 5: record hash, arq job, queue zset, state zset, plugin-jobs zset
-- KEYS[..]  push only, 3: offers hash, state:running zset, the job's arq in-progress key
-- ARGV[1]   fence token, or '' for a write that is not leader-only
-- ARGV[2]   N, how many jobs
-- ARGV[3]   C, how many checkpoint fields
-- ARGV[..]  the backlog section (throttle.lua throttle_backlog): mode, now (s), G, per group plugin, key, N, ids
-- ARGV[..]  C field, value pairs: the checkpoint
-- ARGV[..]  S (stream keys), E (entries), then E stream slot (1..S), payload pairs
-- ARGV[..]  per job, 7 + F: id, arq payload, queue score, index score, wake channel, plugin, F, F hash items
-- ARGV[..]  push only, 5: 'push', now (ms), now (s), in-progress ttl ms, claim nonce
-- Returns   one outcome per job: 1 (enqueued), 0 (id exists: nothing written), -1 (plugin disabled);
--           or, when a group would pass its max_queued, {'full', plugin, key, cap, waiting} (nothing written)
--
-- The record and the arq job are written without a TTL: a job that waits (deferred, retried, in a
-- backlog) is never dropped. The result TTL starts when it ends (finish.lua, cancel.lua).
--
-- Push (one job, no checkpoint): a job due now and first in its queue goes straight to a worker
-- that offered free slots (Keys.offers): claimed here as claim.lua would, and published on that
-- worker's push channel with what the worker needs, so it starts the job without a claim round
-- trip of its own. PUBLISH tells whether the channel is read at all: an offer nobody reads is
-- dropped and the job takes the usual wake-up. (A push lost with its connection after PUBLISH
-- counted it is put back by the owner's reconciler, like a lost finish: jobs/reconcile.py.)
-- Declared before this body: fence_check, the cursor (take_keys, take_args, take_span), CLAIM_FIELDS,
-- CLAIM_ATTEMPT_AT, CLAIMED_OFFSET_MS and PUSH_INSTANCE (reads the instance out of a push channel),
-- throttle.lua's functions (a throttled plugin's job is never pushed: its claim checks the limits).
local leader, enabled, all_jobs = take_keys(3)
local fence, n, c = take_args(3)
local refused = fence_check(leader, fence)
if refused then return refused end
-- max_queued (throttle.lua): checked for the whole call before anything is written
local full, throttle_groups = throttle_backlog()
if full then return full end
n, c = tonumber(n), tonumber(c)
local checkpoint = c > 0 and take_keys(1) or nil
local checkpoint_first, checkpoint_last = take_span(2 * c)
local streams = {take_keys(tonumber(take_args(1)))}
for _ = 1, tonumber(take_args(1)) do
  local slot, payload = take_args(2)
  redis.call('XADD', streams[tonumber(slot)], '*', 'd', payload)
end

local out, woken = {}, {}
local first  -- the first job (a push has only that one)
for i = 1, n do
  local rec, job, queue, state, plugin_jobs = take_keys(5)
  local id, payload, score, index_score, wake, plugin, f = take_args(7)
  local fields_first, fields_last = take_span(tonumber(f))
  if redis.call('EXISTS', rec) == 1 then
    out[i] = 0
  elseif redis.call('HGET', enabled, plugin) == '0' then
    out[i] = -1
  else
    redis.call('HSET', rec, unpack(ARGV, fields_first, fields_last))
    redis.call('SET', job, payload)
    redis.call('ZADD', queue, score, id)
    redis.call('ZADD', state, index_score, id)
    redis.call('ZADD', plugin_jobs, index_score, id)
    redis.call('ZADD', all_jobs, index_score, id)
    woken[wake] = id
    out[i] = 1
  end
  if i == 1 then first = {id = id, rec = rec, queue = queue, state = state} end
end
throttle_track(throttle_groups)
if checkpoint then redis.call('HSET', checkpoint, unpack(ARGV, checkpoint_first, checkpoint_last)) end

local push, now_ms, now_s, progress_ttl, nonce = take_args(5)
local offers, running, progress = take_keys(3)
if n == 1 and out[1] == 1 and push == 'push' then
  -- offers first: under load every worker is full (offers at 0) and the rest is not read
  local o = redis.call('HGETALL', offers)
  local first_free = nil
  for j = 2, #o, 2 do
    if (tonumber(o[j]) or 0) > 0 then first_free = j - 1 break end
  end
  if first_free and redis.call('ZRANGEBYSCORE', first.queue, '-inf', now_ms, 'LIMIT', 0, 1)[1] == first.id
      and redis.call('EXISTS', progress) == 0 and not throttle_limited(first.rec) then
    for j = first_free, #o, 2 do
      local channel, slots = o[j], tonumber(o[j + 1]) or 0
      local instance = string.match(channel, PUSH_INSTANCE)
      if instance and slots > 0 then
        local claim = instance .. ':push:' .. nonce
        local f = redis.call('HMGET', first.rec, unpack(CLAIM_FIELDS))
        f[CLAIM_ATTEMPT_AT] = tostring((tonumber(f[CLAIM_ATTEMPT_AT]) or 0) + 1)
        if redis.call('PUBLISH', channel, cjson.encode({first.id, claim, now_s, f})) > 0 then
          redis.call('SET', progress, '1', 'PX', progress_ttl)
          redis.call('HINCRBY', first.rec, 'attempt', 1)
          redis.call('HSET', first.rec, 'state', 'running', 'started_at', now_s, 'instance', instance, 'claim', claim)
          redis.call('ZREM', first.state, first.id)
          redis.call('ZADD', running, now_s, first.id)
          redis.call('ZINCRBY', first.queue, CLAIMED_OFFSET_MS, first.id)
          redis.call('HINCRBY', offers, channel, -1)
          woken = {}  -- claimed: no worker needs waking for it
          break
        end
        redis.call('HDEL', offers, channel)
      end
    end
  end
end
-- one wake-up per queue, however many jobs went into it
for channel, id in pairs(woken) do redis.call('PUBLISH', channel, id) end
return out
