-- Throttles (jobs/throttle.py): functions the transition scripts call, one line each where they
-- claim (claim.lua), leave `running` (finish.lua, release.lua) or enqueue (enqueue.lua).
-- KEYS     none of its own: the throttle keys are named from the job's plugin and key (T_PREFIX ..
--          'run:' .. plugin .. ':' .. key), like the records a held job comes back from; this
--          project runs one Redis (or a Sentinel-managed primary), never a Redis Cluster.
-- ARGV     none of its own: throttle_backlog reads its section of the enqueue's ARGV with the cursor.
-- Returns  (the functions) see each one.
--
-- Per plugin and key (key '' without a key template), all under T_PREFIX:
--   limits:<plugin>     hash: concurrency, interval_ms, rate (text), key, max_queued (the effective limits)
--   run:<plugin>:<key>  zset: the job ids running now (what the concurrency counts)
--   held:<plugin>:<key> zset: job ids held back, scored by their queue score; out of the queue meanwhile
--   wait:<plugin>:<key> zset: job ids enqueued and not final (max_queued counts those queued or deferred)
--   gcra:<plugin>:<key> hash: tat (ms, when the next start conforms), scout (the one held job left in
--                       its queue, scored at tat: the queue's own due-time wake-up brings it back)
--   keys                zset: every <plugin>:<key> seen (for /status and /metrics), scored by last use
--   counters            hash: throttled:<plugin>, refused:<plugin>, over_cap:<plugin>
-- Declared before this body: T_PREFIX, JOB_PREFIX, QUEUE_PREFIX, WAKE_PREFIX, RELEASE_MAX, THROTTLE_CATCH_UP_MS.

local function throttle_limits(plugin)
  local l = redis.call('HMGET', T_PREFIX .. 'limits:' .. plugin, 'concurrency', 'interval_ms', 'rate')
  return tonumber(l[1]), tonumber(l[2]), l[3]
end

-- Is `id` (waiting, not final) still in its queue?
local function throttle_queued(id)
  local f = redis.call('HMGET', JOB_PREFIX .. id, 'queue', 'state')
  return f[1] and (f[2] == 'queued' or f[2] == 'deferred') and redis.call('ZSCORE', QUEUE_PREFIX .. f[1], id)
end

-- Move held jobs of <plugin>:<key> back into their queues, as many as the limits let start now: up to
-- the free concurrency, or one (the new scout, due when the rate allows) under a rate. Each queue is
-- woken like an enqueue wakes it. Called when a running job leaves, when a job starts, and by the sweep.
local function throttle_release(plugin, key)
  local k = plugin .. ':' .. key
  local held = T_PREFIX .. 'held:' .. k
  if redis.call('EXISTS', held) == 0 then return 0 end
  local concurrency, interval = throttle_limits(plugin)
  local room = RELEASE_MAX
  if concurrency then room = math.min(room, concurrency - redis.call('ZCARD', T_PREFIX .. 'run:' .. k)) end
  local gcra = T_PREFIX .. 'gcra:' .. k
  local tat = 0
  if interval and room > 0 then
    local scout = redis.call('HGET', gcra, 'scout')
    if scout and throttle_queued(scout) then return 0 end  -- one waits for the next start already
    room, tat = 1, tonumber(redis.call('HGET', gcra, 'tat')) or 0
  end
  local released = 0
  while released < room do
    local head = redis.call('ZRANGE', held, 0, 0, 'WITHSCORES')
    if not head[1] then break end
    local id, score = head[1], tonumber(head[2])
    redis.call('ZREM', held, id)
    local f = redis.call('HMGET', JOB_PREFIX .. id, 'queue', 'state')
    if f[1] and (f[2] == 'queued' or f[2] == 'deferred') then  -- else cancelled or expired meanwhile
      if interval then
        score = math.max(score, tat)
        redis.call('HSET', gcra, 'scout', id)
      end
      redis.call('ZADD', QUEUE_PREFIX .. f[1], score, id)
      redis.call('PUBLISH', WAKE_PREFIX .. f[1], id)
      released = released + 1
    end
  end
  return released
end

-- The claim's check of one due candidate (claim.lua). Returns true when the job was held back (it
-- is out of the queue, or left in it as the scout scored at the next conforming start, and its
-- record says why), false when it may start: then it counts as running from here on, so the
-- caller must claim it (it checked nothing that could refuse: not in progress, queued or deferred).
local function throttle_held(queue, id, score, rec, progress, now_ms)
  local plugin, key = unpack(redis.call('HMGET', rec, 'plugin', 'throttle_key'))
  if not plugin then return false end
  local concurrency, interval, rate = throttle_limits(plugin)
  if not concurrency and not interval then return false end
  if redis.call('EXISTS', progress) == 1 then return false end
  local st = redis.call('HGET', rec, 'state')
  if st ~= 'queued' and st ~= 'deferred' then return false end
  key = key or ''
  local k = plugin .. ':' .. key
  local run, gcra = T_PREFIX .. 'run:' .. k, T_PREFIX .. 'gcra:' .. k
  now_ms = tonumber(now_ms)
  local reason
  if concurrency then
    local running = redis.call('ZCARD', run)
    if running >= concurrency then reason = 'concurrency limit ' .. running .. '/' .. concurrency end
  end
  local tat = interval and tonumber(redis.call('HGET', gcra, 'tat')) or 0
  if not reason and interval and tat > now_ms then reason = 'rate limit ' .. rate end
  redis.call('ZADD', T_PREFIX .. 'keys', now_ms, k)
  if not reason then
    redis.call('ZADD', run, now_ms, id)
    redis.call('HDEL', rec, 'waiting')
    if interval then
      -- The scout waited for its slot at `tat`: a worker that claims it late (a busy machine wakes
      -- it tens of milliseconds after its due time) keeps the schedule, so the starts it missed
      -- are caught up and a backlog runs at the rate, not below it (up to CATCH_UP_MS of lateness;
      -- past that the instances were away and the schedule restarts). Any other start (after an
      -- idle spell) gets half an interval of credit, at the price of two starts half an interval
      -- apart then.
      local scout = redis.call('HGET', gcra, 'scout') == id
      local base = scout and math.max(tat, now_ms - THROTTLE_CATCH_UP_MS) or math.max(tat, now_ms - interval / 2)
      redis.call('HSET', gcra, 'tat', base + interval)
      if scout then redis.call('HDEL', gcra, 'scout') end
    end
    throttle_release(plugin, key)  -- room left: the next held one comes back (or becomes the scout)
    return false
  end
  redis.call('HSET', rec, 'waiting', 'waiting: ' .. reason .. (key ~= '' and (' for ' .. key) or ''))
  redis.call('HINCRBY', T_PREFIX .. 'counters', 'throttled:' .. plugin, 1)
  if string.sub(reason, 1, 4) == 'rate' then
    local scout = redis.call('HGET', gcra, 'scout')
    if not scout or scout == id or not throttle_queued(scout) then
      redis.call('HSET', gcra, 'scout', id)
      redis.call('ZADD', queue, 'XX', tat, id)  -- due when the next start conforms
      return true
    end
  end
  redis.call('ZREM', queue, id)
  redis.call('ZADD', T_PREFIX .. 'held:' .. k, score, id)
  return true
end

-- A job leaves `running` (finish.lua, release.lua): its place in the count frees, and a held job
-- of the same key comes back. Call it while the record still says which plugin and key.
local function throttle_leave(rec, id)
  local plugin, key = unpack(redis.call('HMGET', rec, 'plugin', 'throttle_key'))
  if not plugin then return end
  key = key or ''
  if redis.call('ZREM', T_PREFIX .. 'run:' .. plugin .. ':' .. key, id) == 1 then
    throttle_release(plugin, key)
  end
end

-- Is the record's plugin limited in what may start? (The enqueue's push leaves such a job to a claim.)
local function throttle_limited(rec)
  local plugin = redis.call('HGET', rec, 'plugin')
  if not plugin then return false end
  local concurrency, interval = throttle_limits(plugin)
  return concurrency ~= nil or interval ~= nil
end

-- Queued or deferred members of a wait set, dropping those that finished or expired (the set is
-- cleaned here, when it is counted, so the cancel and delete scripts need not know it).
local function throttle_waiting(wait)
  local count = 0
  for _, id in ipairs(redis.call('ZRANGE', wait, 0, -1)) do
    local st = redis.call('HGET', JOB_PREFIX .. id, 'state')
    if st == 'queued' or st == 'deferred' then
      count = count + 1
    elseif st ~= 'running' then
      redis.call('ZREM', wait, id)
    end
  end
  return count
end

-- The enqueue's backlog section (enqueue.lua), read with the cursor: mode ('refuse' or 'count'),
-- now (s), G, then per group: plugin, key, N, the N job ids. Checks every group before anything is written:
-- in 'refuse' mode a group that would pass its plugin's max_queued refuses the whole call, and the
-- reply is {'full', plugin, key, cap, waiting}; 'try' refuses the same way without counting a
-- refusal (a shared call of triggers, whose capped jobs are sent again one by one:
-- jobs/group_commit.py); in 'count' mode (schedules, change capture: they cannot be refused) the
-- jobs go in past the cap and counters over_cap:<plugin> counts them.
-- Returns the refusal or nil, and the groups, for throttle_track once the jobs are written.
local function throttle_backlog()
  local mode, now_s, g = take_args(3)
  local groups = {now_s = now_s}
  for i = 1, tonumber(g) do
    local plugin, key, n = take_args(3)
    local first, last = take_span(tonumber(n))
    groups[i] = {plugin, key, first, last}
  end
  for _, group in ipairs(groups) do
    local plugin, key, first, last = unpack(group)
    local n = last - first + 1
    local cap = tonumber(redis.call('HGET', T_PREFIX .. 'limits:' .. plugin, 'max_queued'))
    local wait = T_PREFIX .. 'wait:' .. plugin .. ':' .. key
    -- the set's size bounds the count (it holds running ones too): most enqueues never count
    if cap and redis.call('ZCARD', wait) + n > cap then
      local waiting = throttle_waiting(wait)
      if waiting + n > cap then
        if mode == 'refuse' or mode == 'try' then
          if mode == 'refuse' then redis.call('HINCRBY', T_PREFIX .. 'counters', 'refused:' .. plugin, n) end
          return {'full', plugin, key, cap, waiting}, groups
        end
        redis.call('HINCRBY', T_PREFIX .. 'counters', 'over_cap:' .. plugin, math.min(n, waiting + n - cap))
      end
    end
  end
  return nil, groups
end

-- After the enqueue wrote its jobs: each group's ids join its wait set (an id that existed already
-- is harmless there: the count reads states).
local function throttle_track(groups)
  local now_s = tonumber(groups.now_s)
  for _, group in ipairs(groups) do
    local plugin, key, first, last = unpack(group)
    local wait = T_PREFIX .. 'wait:' .. plugin .. ':' .. key
    for i = first, last do redis.call('ZADD', wait, now_s, ARGV[i]) end
    redis.call('ZADD', T_PREFIX .. 'keys', now_s * 1000, plugin .. ':' .. key)
  end
end
