-- Create a workflow (WorkflowStore.create): its record, its graph and join counters, and its
-- first steps enqueued, in one step; nothing when a workflow with this id exists (a replayed
-- change-capture round names its workflow by the change, so it is created once).
-- KEYS[1]  the workflow's record hash
-- KEYS[2]  all-workflows zset
-- ARGV[1]  workflow id
-- ARGV[2]  now (s)
-- ARGV[3]  the entry nodes, comma-separated: the job steps that start now
-- ARGV[4]  R, how many record arguments follow (field, value, ...)
-- ARGV[..] R record arguments, then L (how many join-counter arguments), L of them, then the
--          graph's field, value pairs to the end
-- Returns  1, or 0 when a workflow with this id exists (nothing written)
-- Declared before this body: wf_start_job, wf_wake (jobs/lua/workflow.lua), the cursor (take_*).
local wf, all = KEYS[1], KEYS[2]
local wid, now, entries, r = take_args(4)
if redis.call('EXISTS', wf) == 1 then return 0 end
local graph = wf .. ':graph'
redis.call('HSET', wf, unpack(ARGV, take_span(tonumber(r))))
local l = tonumber(take_args(1))
if l > 0 then redis.call('HSET', wf .. ':left', unpack(ARGV, take_span(l))) end
-- in chunks: unpack() of more than a few thousand values overflows Lua's stack
local first, last = take_span(args_left())
for i = first, last, 1000 do redis.call('HSET', graph, unpack(ARGV, i, math.min(i + 999, last))) end
redis.call('ZADD', all, now, wid)
for node in string.gmatch(entries, '[^,]+') do wf_start_job(graph, node, nil, now) end
wf_wake()
return 1
