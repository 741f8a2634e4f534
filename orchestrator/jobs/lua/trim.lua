-- Drop the index entries of expired records (JobStore.trim_indexes reads the candidates first: the
-- entries older than the result TTL). Only an entry whose record is gone, and that was not added
-- again meanwhile (a new job under the same id), is dropped: a record expires only once its job
-- ended, so a job that waits longer than the TTL stays listed and counted.
-- KEYS[1]   the index zset (a state, a plugin's jobs, all jobs)
-- KEYS[2..] per candidate, its record hash
-- ARGV[1]   the cutoff: entries scored at most this are candidates
-- ARGV[2..] per candidate, its id
-- Returns   how many entries were dropped
local index, cutoff = KEYS[1], tonumber(ARGV[1])
local dropped = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', index, id)
  if score and tonumber(score) <= cutoff and redis.call('EXISTS', KEYS[i]) == 0 then
    dropped = dropped + redis.call('ZREM', index, id)
  end
end
return dropped
