-- Cancel a workflow (WorkflowStore.cancel): steps not started are cancelled, running ones are
-- asked to stop (their finish then leaves the ended workflow alone), every record gets the TTL.
-- KEYS[1]  the workflow's record hash
-- ARGV[1]  workflow id
-- ARGV[2]  now (s)
-- ARGV[3]  ttl ms of the final records
-- Returns  'cancelled', the state it had already ended in, or 'missing'
-- Declared before this body: wf_end (jobs/lua/workflow.lua).
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st ~= 'running' then return st end
wf_end(ARGV[1], 'cancelled', 'workflow cancelled', nil, ARGV[2], ARGV[3])
return 'cancelled'
