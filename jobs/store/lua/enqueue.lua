-- Write a job to the least-loaded live consumer of its pool (or to the pool's delayed set).
-- KEYS[1] job:<id>, KEYS[2] workers:<pool>, KEYS[3] delayed:<pool>, KEYS[4] draining:<pool>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id, ARGV[4] delay ms, ARGV[5] priority,
-- ARGV[6] backlog limit, ARGV[7] name, ARGV[8] pool, ARGV[9] data (JSON), ARGV[10] max attempts,
-- ARGV[11] timeout s, ARGV[12] backoff (JSON), ARGV[13] request id, ARGV[14] traceparent ('' for
-- none)
-- Returns {outcome, status, worker}: outcome is created, duplicate, no_consumer or backlog_full.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local r = redis.call('HMGET', KEYS[1], 'status', 'worker')
  return {'duplicate', r[1] or '', r[2] or ''}
end
local id, delay, pool = ARGV[3], tonumber(ARGV[4]), ARGV[8]
local live = accepting(pool)
if #live == 0 then return {'no_consumer', '', ''} end
local best, best_load, best_queued = nil, nil, 0
local waiting = redis.call('ZCARD', KEYS[3])
for _, cid in ipairs(live) do
  local queued = redis.call('ZCARD', ready_key(cid))
  local load = queued + redis.call('ZCARD', active_key(cid))
  waiting = waiting + queued
  if best_load == nil or load < best_load then best, best_load, best_queued = cid, load, queued end
end
if waiting >= tonumber(ARGV[6]) then return {'backlog_full', '', ''} end
local score = NOW - tonumber(ARGV[5]) * PRIORITY_STEP
local fields = {'id', id, 'name', ARGV[7], 'pool', pool, 'data', ARGV[9],
  'maxAttempts', ARGV[10], 'timeout', ARGV[11], 'backoff', ARGV[12], 'priority', ARGV[5],
  'score', string.format('%.0f', score), 'createdAt', NOW, 'attempts', 0}
if ARGV[13] ~= '' then fields[#fields + 1] = 'requestId'; fields[#fields + 1] = ARGV[13] end
if ARGV[14] ~= '' then fields[#fields + 1] = 'traceparent'; fields[#fields + 1] = ARGV[14] end
if delay > 0 then
  redis.call('HSET', KEYS[1], 'status', 'delayed', unpack(fields))
  indexed(id, 'delayed')
  emit('enqueued', id, ARGV[7], pool, 'delayed')
  redis.call('ZADD', KEYS[3], NOW + delay, id)
  wake(best)  -- so that it shortens its wait to the new due time
  return {'created', 'delayed', ''}
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', best, unpack(fields))
indexed(id, 'queued')
emit('enqueued', id, ARGV[7], pool, 'queued', {'worker', best})
redis.call('ZADD', ready_key(best), score, id)
-- a consumer with jobs waiting already has a wake-up pending, or is full and will claim
-- when a slot frees
if best_queued == 0 then wake(best) end
return {'created', 'queued', best}
