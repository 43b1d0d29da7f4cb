-- Run a dead-lettered job again under the same id with fresh tries, in one step: a second
-- retry of the same entry finds it gone.
-- KEYS[1] job:<id>, KEYS[2] dlq
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id
-- Returns {outcome, status}: outcome is retried, missing, or conflict (the job exists but is
-- not dead-lettered: retried already).
local id = ARGV[3]
local status = redis.call('HGET', KEYS[1], 'status')
if redis.call('ZSCORE', KEYS[2], id) == false or status ~= 'dead' then
  if status then return {'conflict', status} end
  redis.call('ZREM', KEYS[2], id)
  return {'missing', ''}
end
redis.call('ZREM', KEYS[2], id)
local pool = redis.call('HGET', KEYS[1], 'pool')
redis.call('HDEL', KEYS[1], 'error', 'traceback', 'result', 'completedAt', 'failedAt',
  'progress', 'token', 'worker', 'startedAt')
set_status(id, 'queued')
redis.call('HSET', KEYS[1], 'attempts', 0, 'crashes', 0)
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', delayed_key(pool), NOW, id)
wake_pool(pool)
return {'retried', 'queued'}
