-- Cancel a job: a waiting one is removed and never runs, a running one is told to abort.
-- KEYS[1] job hash
-- ARGV[1] prefix, ARGV[2] id, ARGV[3] now ms, ARGV[4] keep result ms
-- Returns {outcome, previous status}: outcome is 'cancelled', 'finished' or 'missing'.
local id, now = ARGV[2], tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'status', 'pool', 'worker')
local status, pool, worker = r[1], r[2], r[3]
if not status then return {'missing', ''} end
if status == 'completed' or status == 'dead' or status == 'cancelled' then
  return {'finished', status}
end
redis.call('ZREM', delayed_key(pool), id)
if worker then redis.call('ZREM', ready_key(worker), id) end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completedAt', now)
if status == 'active' and worker then
  redis.call('RPUSH', wake_key(worker), 'abort:' .. id)
else
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return {'cancelled', status}
