-- Workflows, the job side (jobs/steps.py): what happens to a workflow when one of its jobs ends.
-- A snippet: finish.lua and cancel.lua call workflow_step_ended(...) in the same atomic step that
-- records the end, so a step is enqueued exactly once by the finish it waits for (a retried
-- finish or a stalled instance's late one is refused by the claim fence before this runs).
-- KEYS     none of its own: a workflow's keys are named from its id (the *_PREFIX constants, made
--          from Keys): its record WF_PREFIX..id, its graph, join counters and member results
--          (..':graph', ..':left', ..':results'), and its steps' job keys
-- ARGV     none of its own: the callers pass the record key, now (s) and the final records' ttl ms
-- Returns  (the functions) nothing; wf_start_job and wf_end write, wf_wake publishes the wake-ups
--
-- The graph (workflows/model.py compiles a tree of steps into it): nodes 1..n, a job node per
-- job step and a join node per group. Graph fields per node: '<n>:next' (the job nodes started
-- with its result as `previous`), or '<n>:join' and '<n>:slot' (the group it reports into, in
-- member order); a job node's '<n>:job', ':fields' (JSON list of its record's fields), ':payload'
-- (arq's), ':offset' (priority offset of its queue score), ':queue', ':plugin', ':path' (where the
-- step is in the tree, for messages) and, inside a
-- group with on_failure = continue, ':catch' ('<join>:<slot>': a failure becomes an error entry
-- there); a join node's ':count'. Member results are stored per member ('<join>:<slot>') and
-- counted down per join ('<join>' in ':left'): one member's end costs the same in a group of
-- 10,000 as in one of 2; the list is gathered once, when the join's count reaches zero.
-- Needs    WF_PREFIX, JOB_PREFIX, LOG_PREFIX, ARQ_JOB_PREFIX, QUEUE_PREFIX, STATE_PREFIX, PLUGIN_JOBS_PREFIX,
--          ALL_JOBS, WAKE_PREFIX, DONE_PREFIX, WF_DONE_PREFIX, WF_OUTCOMES, ABORT_KEY, CANCEL_CHANNEL.
local wf_woken, wf_started = {}, 0
local wf_report

-- Enqueue one job step, as enqueue.lua would (its record does not expire: wf_end gives it the TTL).
local function wf_start_job(graph, node, previous, now)
  local f = redis.call('HMGET', graph, node .. ':job', node .. ':fields', node .. ':payload', node .. ':offset',
    node .. ':queue', node .. ':plugin')
  local id, fields, payload, offset, queue, plugin = f[1], f[2], f[3], f[4], f[5], f[6]
  local rec = JOB_PREFIX .. id
  if redis.call('EXISTS', rec) == 1 then return end
  redis.call('HSET', rec, unpack(cjson.decode(fields)))
  redis.call('HSET', rec, 'job_id', id, 'state', 'queued', 'enqueued_at', now)
  if previous then redis.call('HSET', rec, 'previous', previous) end
  redis.call('SET', ARQ_JOB_PREFIX .. id, payload)
  -- a microsecond apart (the queue score's resolution, as Submitter.prepare): steps started
  -- together are claimed in member order
  wf_started = wf_started + 1
  local score = tonumber(now) * 1000 + tonumber(offset) + wf_started / 1000
  redis.call('ZADD', QUEUE_PREFIX .. queue, string.format('%.3f', score), id)
  redis.call('ZADD', STATE_PREFIX .. 'queued', now, id)
  redis.call('ZADD', PLUGIN_JOBS_PREFIX .. plugin, now, id)
  redis.call('ZADD', ALL_JOBS, now, id)
  wf_woken[WAKE_PREFIX .. queue] = id
end

-- One wake-up per queue, however many steps went into it.
local function wf_wake()
  for channel, id in pairs(wf_woken) do redis.call('PUBLISH', channel, id) end
  wf_woken = {}
end

-- The workflow ends: succeeded, failed (waiting steps cancelled with the reason, running ones
-- finish) or cancelled (running ones are asked to stop too). Every record of it gets the TTL now.
local function wf_end(wid, state, reason, result, now, ttl)
  local wf = WF_PREFIX .. wid
  local graph = wf .. ':graph'
  redis.call('HSET', wf, 'state', state, 'finished_at', now)
  if reason then redis.call('HSET', wf, 'error', reason) end
  if result then redis.call('HSET', wf, 'result', result) end
  local n = tonumber(redis.call('HGET', wf, 'nodes')) or 0
  for node = 1, n do
    local id = redis.call('HGET', graph, node .. ':job')
    local rec = id and JOB_PREFIX .. id
    local st = rec and redis.call('HGET', rec, 'state')
    if st == 'queued' or st == 'deferred' then
      local queue = redis.call('HGET', rec, 'queue')
      redis.call('ZREM', QUEUE_PREFIX .. queue, id)
      redis.call('DEL', ARQ_JOB_PREFIX .. id)
      redis.call('HSET', rec, 'state', 'cancelled', 'finished_at', now, 'error', reason or 'workflow ended')
      redis.call('ZREM', STATE_PREFIX .. st, id)
      redis.call('ZADD', STATE_PREFIX .. 'cancelled', now, id)
      redis.call('PEXPIRE', rec, ttl)
      local record = cjson.encode(redis.call('HGETALL', rec))
      redis.call('PUBLISH', DONE_PREFIX .. id, record)
      local notify = redis.call('HGET', rec, 'notify')
      if notify then redis.call('PUBLISH', notify, id .. '\n' .. record) end  -- id first: read without decoding
    elseif st == 'running' then
      -- it keeps no TTL until its own finish gives it one
      if state == 'cancelled' then
        redis.call('HSET', rec, 'cancel_requested', '1')
        redis.call('ZADD', ABORT_KEY, math.floor(tonumber(now) * 1000), id)
        redis.call('PUBLISH', CANCEL_CHANNEL, id)
      end
    elseif st then
      redis.call('PEXPIRE', rec, ttl)
    end
    -- its log too (kept with the record while the workflow ran); a running step's finish does it
    if id and st ~= 'running' then redis.call('PEXPIRE', LOG_PREFIX .. id, ttl) end
  end
  for _, key in ipairs({wf, graph, wf .. ':left', wf .. ':results'}) do redis.call('PEXPIRE', key, ttl) end
  redis.call('HINCRBY', WF_OUTCOMES, state, 1)
  redis.call('PUBLISH', WF_DONE_PREFIX .. wid, state)
end

-- A node is done with `result` (raw JSON): start what follows it, or report into its group.
local function wf_node_done(wid, node, result, now, ttl)
  local graph = WF_PREFIX .. wid .. ':graph'
  local f = redis.call('HMGET', graph, node .. ':next', node .. ':join', node .. ':slot')
  if f[1] then
    for next_node in string.gmatch(f[1], '[^,]+') do wf_start_job(graph, next_node, result, now) end
  elseif f[2] then
    wf_report(wid, f[2], f[3], result, now, ttl)
  else
    wf_end(wid, 'succeeded', nil, result, now, ttl)  -- the last step of the root
  end
end

-- A member's result (or error entry) into its group; the last one completes the group's join node,
-- whose result is the members' results in member order.
wf_report = function(wid, join, slot, result, now, ttl)
  local wf = WF_PREFIX .. wid
  redis.call('HSET', wf .. ':results', join .. ':' .. slot, result)
  if redis.call('HINCRBY', wf .. ':left', join, -1) > 0 then return end
  local count = tonumber(redis.call('HGET', wf .. ':graph', join .. ':count'))
  local parts = {}
  -- in chunks: unpack() of more than a few thousand values overflows Lua's stack
  for first = 1, count, 1000 do
    local names = {}
    for slot_n = first, math.min(first + 999, count) do names[#names + 1] = join .. ':' .. slot_n end
    for _, v in ipairs(redis.call('HMGET', wf .. ':results', unpack(names))) do parts[#parts + 1] = v or 'null' end
  end
  wf_node_done(wid, join, '[' .. table.concat(parts, ',') .. ']', now, ttl)
end

-- A job reached a final state (finish.lua, cancel.lua): advance its workflow, if it has one that runs.
local function workflow_step_ended(rec, now, ttl)
  local f = redis.call('HMGET', rec, 'workflow', 'step', 'state')
  local wid, node, st = f[1], f[2], f[3]
  if not wid or redis.call('HGET', WF_PREFIX .. wid, 'state') ~= 'running' then return end
  redis.call('PERSIST', rec)  -- kept while its workflow runs: wf_end gives it the TTL
  redis.call('PERSIST', LOG_PREFIX .. string.sub(rec, #JOB_PREFIX + 1))  -- and its log, the same
  -- counted: a step that ends while its workflow is not running is caught up by a resume (resume.lua)
  redis.call('HSET', rec, 'wf_counted', '1')
  if st == 'succeeded' then
    wf_node_done(wid, node, redis.call('HGET', rec, 'result') or 'null', now, ttl)
  else
    local e = redis.call('HMGET', rec, 'error', 'error_type', 'plugin')
    local catch = redis.call('HGET', WF_PREFIX .. wid .. ':graph', node .. ':catch')
    if catch then
      local join, slot = string.match(catch, '^(%d+):(%d+)$')
      local entry = cjson.encode({error = e[1] or st, error_type = e[2] or st, state = st,
        job_id = string.sub(rec, #JOB_PREFIX + 1)})
      wf_report(wid, join, slot, entry, now, ttl)
    else
      local path = redis.call('HGET', WF_PREFIX .. wid .. ':graph', node .. ':path') or node
      wf_end(wid, 'failed', 'step ' .. path .. ' (' .. (e[3] or '?') .. ') ' .. st .. ': ' .. (e[1] or st), nil, now, ttl)
    end
  end
  wf_wake()
end
