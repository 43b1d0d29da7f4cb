-- Cancel a job: a waiting one is removed and never runs; a running try is told to abort, and
-- its end (or its holder's recovery) records it.
-- KEYS[1] job:<id>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id, ARGV[4] keep ms
-- Returns {outcome, previous status}: outcome is cancelled, finished or missing.
local id = ARGV[3]
local r = redis.call('HMGET', KEYS[1], 'status', 'pool', 'worker', 'token', 'name', 'group')
local status, pool, worker, token = r[1], r[2], r[3], r[4]
if not status then return {'missing', ''} end
if status == 'completed' or status == 'dead' or status == 'cancelled' then
  return {'finished', status}
end
if status == 'active' then
  set_status(id, 'cancelled')
  redis.call('RPUSH', wake_key(worker), 'abort:' .. id .. ':' .. (token or ''))
  return {'cancelled', status}
end
redis.call('ZREM', delayed_key(pool), id)
redis.call('ZREM', parked_key(pool, r[5] or ''), id)
if worker then ready_moved(worker, pool, -redis.call('ZREM', ready_key(worker), id)) end
if r[6] then group_unqueue(id, pool, r[6]) end
finished(id, 'cancelled', tonumber(ARGV[4]))
return {'cancelled', status}
