-- Pause or resume one schedule definition in place, with no read-modify-write race with another
-- writer (ScheduleStore.set_enabled).
-- KEYS[1]  definitions hash: id -> JSON
-- KEYS[2]  version counter
-- KEYS[3]  state hash: <id>|<field>
-- ARGV[1]  schedule id
-- ARGV[2]  '1' (resume) or '0' (pause)
-- ARGV[3]  the changed channel
-- Returns  1, or 0 when the schedule does not exist (or was removed)
-- Declared before this body: FIELD_SEPARATOR (schedules/store.py field_of).
local definitions, version, state = KEYS[1], KEYS[2], KEYS[3]
local id, enabled, channel = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', definitions, id)
if not raw then return 0 end
local d = cjson.decode(raw)
if d['removed_at'] and d['removed_at'] ~= cjson.null then return 0 end
d['spec']['enabled'] = (enabled == '1')
redis.call('HSET', definitions, id, cjson.encode(d))
-- a resumed schedule starts from its next slot after now, not from where it was paused
redis.call('HDEL', state, id .. FIELD_SEPARATOR .. 'next')
redis.call('PUBLISH', channel, redis.call('INCR', version))
return 1
