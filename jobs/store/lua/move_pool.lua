-- Move the jobs of a pool that is no longer served (removed from POOLS) to another pool, in a
-- bounded batch; call again while it answers more. Refused while a consumer of it is live.
-- KEYS[1] workers:<from>, KEYS[2] delayed:<from>, KEYS[3] delayed:<to>, KEYS[4] pools
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] max crashes, ARGV[4] dlq max, ARGV[5] keep ms,
-- ARGV[6] max backoff ms, ARGV[7] batch, ARGV[8] from pool, ARGV[9] history ms, ARGV[10] to pool
-- Returns {state, moved}: state is live (refused), more or done.
local o = recover_options()
local to = ARGV[10]
if redis.call('ZCOUNT', KEYS[1], NOW, '+inf') > 0 then return {'live', 0} end
local budget = o.batch
for _, cid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if budget <= 0 then break end
  local m, done = hand_back(cid, o.pool, budget, o)
  budget = budget - math.max(m, 1)
end
local moved = 0
local batch = redis.call('ZRANGE', KEYS[2], 0, math.max(budget, 1) - 1, 'WITHSCORES')
for i = 1, #batch, 2 do
  local id = batch[i]
  redis.call('ZREM', KEYS[2], id)
  if redis.call('EXISTS', job_key(id)) == 1 then
    redis.call('HSET', job_key(id), 'pool', to)
    redis.call('ZADD', KEYS[3], batch[i + 1], id)
    moved = moved + 1
  end
end
if moved > 0 then wake_pool(to) end
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[4], o.pool)
  return {'done', moved}
end
return {'more', moved}
