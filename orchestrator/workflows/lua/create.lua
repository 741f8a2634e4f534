-- Create a workflow (WorkflowStore.create): its record, and its first steps enqueued. The graph
-- and the join counters are written in the same MULTI, just before (they can be too large for
-- one script's arguments).
-- KEYS[1]  the workflow's record hash
-- KEYS[2]  all-workflows zset
-- ARGV[1]  workflow id
-- ARGV[2]  now (s)
-- ARGV[3]  the entry nodes, comma-separated: the job steps that start now
-- ARGV[4..] field, value, ... of the record
-- Returns  1, or 0 when a workflow with this id exists (the record is left as it was)
-- Declared before this body: wf_start_job, wf_wake (jobs/lua/workflow.lua).
local wf, all = KEYS[1], KEYS[2]
local wid, now, entries = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', wf) == 1 then return 0 end
redis.call('HSET', wf, unpack(ARGV, 4))
redis.call('ZADD', all, now, wid)
for node in string.gmatch(entries, '[^,]+') do wf_start_job(wf .. ':graph', node, nil, now) end
wf_wake()
return 1
