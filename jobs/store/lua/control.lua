-- Pause or resume a pool, or set or remove its limits, for every node at once: the state
-- lives in control:<pool>, and each consumer of the pool is told whether its claims must read
-- it (gate). A resume or a change of limits wakes the pool.
-- KEYS[1] control:<pool>, KEYS[2] workers:<pool>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] pool, ARGV[4] what: pause, resume, limits (ARGV[5]
-- the limits JSON, '' to remove them) or read
-- Returns {paused ('1' or ''), limits JSON or '', caps JSON or '', holdUntil ms or ''}.
local pool, what = ARGV[3], ARGV[4]
if what == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1')
elseif what == 'resume' then
  redis.call('HDEL', KEYS[1], 'paused')
elseif what == 'limits' then
  if ARGV[5] == '' then redis.call('HDEL', KEYS[1], 'limits')
  else redis.call('HSET', KEYS[1], 'limits', ARGV[5]) end
end
if what ~= 'read' then
  set_gates(pool)
  if what ~= 'pause' then wake_pool(pool) end
end
local c = redis.call('HMGET', KEYS[1], 'paused', 'limits', 'caps', 'holdUntil')
return {c[1] or '', c[2] or '', c[3] or '', c[4] or ''}
