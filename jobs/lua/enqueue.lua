-- Pick the least-loaded live consumer of the pool and write the job to it, in one step.
-- KEYS[1] job hash, KEYS[2] workers:<pool>, KEYS[3] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] id, ARGV[3] now ms, ARGV[4] delay ms, ARGV[5] ready score,
-- ARGV[6] backlog limit, ARGV[7] name, ARGV[8] pool, ARGV[9] data (JSON), ARGV[10] max attempts,
-- ARGV[11] timeout s, ARGV[12] backoff (JSON), ARGV[13] priority
-- Returns {code, status, worker}: 1 created, 0 duplicate, -1 no live consumer, -2 backlog full.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local r = redis.call('HMGET', KEYS[1], 'status', 'worker')
  return {0, r[1] or '', r[2] or ''}
end
local id, now, delay = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local live = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')
if #live == 0 then return {-1, '', ''} end
local best, best_load, best_queued, waiting = nil, nil, 0, 0
for _, cid in ipairs(live) do
  local queued = redis.call('ZCARD', ready_key(cid))
  local load = queued + redis.call('ZCARD', active_key(cid))
  waiting = waiting + queued
  if best_load == nil or load < best_load then best, best_load, best_queued = cid, load, queued end
end
if waiting >= tonumber(ARGV[6]) then return {-2, '', ''} end
local fields = {'id', id, 'name', ARGV[7], 'pool', ARGV[8], 'data', ARGV[9],
  'maxAttempts', ARGV[10], 'timeout', ARGV[11], 'backoff', ARGV[12], 'priority', ARGV[13],
  'score', ARGV[5], 'createdAt', now}
if delay > 0 then
  redis.call('HSET', KEYS[1], 'status', 'delayed', unpack(fields))
  redis.call('ZADD', KEYS[3], now + delay, id)
  wake(best)  -- so that it shortens its wait to the new due time
  return {1, 'delayed', ''}
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', best, unpack(fields))
redis.call('ZADD', ready_key(best), ARGV[5], id)
-- a consumer with jobs waiting already has a wake-up pending, or is full and will claim
-- when a slot frees (finish wakes a full consumer)
if best_queued == 0 then wake(best) end
return {1, 'queued', best}
