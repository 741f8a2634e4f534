-- Resume a failed workflow (WorkflowStore.resume, from `jobs retry` of a failed step): the failed
-- step and the steps its failure cancelled start again as new jobs (retry_of the old ones, with
-- the same `previous`), a step that succeeded after the failure (it was running then, and its end
-- was not counted) is counted now, and nothing expires while it runs again.
-- KEYS[1]  the workflow's record hash
-- ARGV[1]  workflow id
-- ARGV[2]  now (s)
-- ARGV[3]  ttl ms of the final records (the replaced jobs keep theirs from now)
-- ARGV[4..] per step to restart, 3: its node, the new job id, the new job's arq payload
-- Returns  the new job ids, in the order given ('' for a step that was not failed or cancelled),
--          or the workflow's state when it is not `failed` (nothing written)
-- Declared before this body: wf_start_job, wf_node_done, wf_wake, JOB_PREFIX (jobs/lua/workflow.lua).
local wf = KEYS[1]
local wid, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local graph = wf .. ':graph'
local st = redis.call('HGET', wf, 'state')
if st ~= 'failed' then return st or 'missing' end
redis.call('HSET', wf, 'state', 'running')
redis.call('HDEL', wf, 'finished_at', 'error')
for _, key in ipairs({wf, graph, wf .. ':left', wf .. ':results'}) do redis.call('PERSIST', key) end
local n = tonumber(redis.call('HGET', wf, 'nodes')) or 0
for node = 1, n do
  local id = redis.call('HGET', graph, node .. ':job')
  if id then redis.call('PERSIST', JOB_PREFIX .. id) end
end
local out = {}
for i = 4, #ARGV, 3 do
  local node, new_id, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old_id = redis.call('HGET', graph, node .. ':job')
  local old = JOB_PREFIX .. old_id
  local old_state = redis.call('HGET', old, 'state')
  if old_state == 'failed' or old_state == 'cancelled' then
    redis.call('HSET', graph, node .. ':job', new_id, node .. ':payload', payload)
    redis.call('HSET', old, 'retried_as', new_id)
    redis.call('PEXPIRE', old, ttl)
    wf_start_job(graph, node, redis.call('HGET', old, 'previous'), now)
    redis.call('HSET', JOB_PREFIX .. new_id, 'retry_of', old_id, 'source', 'retry')
    out[#out + 1] = new_id
  else
    out[#out + 1] = ''
  end
end
for node = 1, n do
  local id = redis.call('HGET', graph, node .. ':job')
  local rec = id and JOB_PREFIX .. id
  if rec and redis.call('HGET', rec, 'state') == 'succeeded' and redis.call('HGET', rec, 'wf_counted') ~= '1' then
    redis.call('HSET', rec, 'wf_counted', '1')
    wf_node_done(wid, tostring(node), redis.call('HGET', rec, 'result') or 'null', now, ttl)
  end
end
wf_wake()
return out
