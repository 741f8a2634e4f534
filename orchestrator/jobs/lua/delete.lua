-- Delete a job that is not running (JobStore.delete): its record, log, arq payload and every index entry.
-- KEYS[1]  record hash
-- KEYS[2]  log stream
-- KEYS[3]  arq job
-- KEYS[4]  queue zset
-- KEYS[5]  the zset of its state as read
-- KEYS[6]  plugin-jobs zset
-- KEYS[7]  all-jobs zset
-- ARGV[1]  job id
-- ARGV[2]  its state as read
-- Returns  1 (deleted), 0 (gone already), or its state when that is `running` or changed since the read
local rec, log, job, queue, state, plugin_jobs, all_jobs = unpack(KEYS, 1, 7)
local id, read_state = ARGV[1], ARGV[2]
local st = redis.call('HGET', rec, 'state')
if not st then return 0 end
if st == 'running' or st ~= read_state then return st end
redis.call('DEL', rec, log, job)
redis.call('ZREM', queue, id)
redis.call('ZREM', state, id)
redis.call('ZREM', plugin_jobs, id)
redis.call('ZREM', all_jobs, id)
return 1
