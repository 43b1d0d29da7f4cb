-- Write a job to the least-loaded live consumer of its pool (or to the pool's delayed set).
-- KEYS[1] job:<id>, KEYS[2] workers:<pool>, KEYS[3] delayed:<pool>, KEYS[4] draining:<pool>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id, ARGV[4] delay ms, ARGV[5] priority,
-- ARGV[6] backlog limit, ARGV[7] name, ARGV[8] pool, ARGV[9] data (JSON), ARGV[10] max attempts,
-- ARGV[11] timeout s, ARGV[12] backoff (JSON), ARGV[13] request id, ARGV[14] traceparent ('' for
-- none), ARGV[15] dedupe key ('' for none), ARGV[16] dedupe mode (simple, throttle, debounce),
-- ARGV[17] dedupe ttl ms, ARGV[18] group ('' for none: the job is not in a group)
-- Returns {outcome, status, worker, job id}: outcome is created, duplicate (the id exists),
-- deduplicated (the job of the dedupe key stands for this one: its id), no_consumer or
-- backlog_full.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local r = redis.call('HMGET', KEYS[1], 'status', 'worker')
  return {'duplicate', r[1] or '', r[2] or '', ARGV[3]}
end
local id, delay, pool = ARGV[3], tonumber(ARGV[4]), ARGV[8]
local dedupe, mode, ttl = ARGV[15], ARGV[16], tonumber(ARGV[17])
if dedupe ~= '' then
  -- P:dedupe:<pool>:<key> names the job that stands for every enqueue of the key: simple,
  -- until it finishes (at most ttl); throttle, for ttl; debounce, while it waits (its data
  -- replaced, its start moved to ttl after this enqueue)
  dedupe = P .. ':dedupe:' .. pool .. ':' .. dedupe
  local held = redis.call('GET', dedupe)
  if held then
    local r = redis.call('HMGET', job_key(held), 'status', 'worker')
    local waiting = r[1] == 'delayed' or r[1] == 'queued'
    if mode == 'debounce' and r[1] == 'delayed' and
        redis.call('ZSCORE', delayed_key(pool), held) then
      redis.call('HSET', job_key(held), 'data', ARGV[9])
      redis.call('ZADD', delayed_key(pool), 'XX', NOW + math.max(delay, ttl), held)
      redis.call('SET', dedupe, held, 'PX', ttl)
      return {'deduplicated', r[1], '', held}
    end
    if mode == 'throttle' or (mode == 'simple' and (waiting or r[1] == 'active' or
        r[1] == 'failed')) then
      return {'deduplicated', r[1] or '', r[2] or '', held}
    end
  end
  if mode == 'debounce' then delay = math.max(delay, ttl) end
end
local best = least_loaded(pool)
if not best then return {'no_consumer', '', '', ''} end
local waiting = redis.call('ZCARD', KEYS[3]) + tonumber(redis.call('GET', queued_key(pool)) or 0)
local group = ARGV[18]
if group ~= '' then waiting = waiting + tonumber(redis.call('GET', grouped_key(pool)) or 0) end
if waiting >= tonumber(ARGV[6]) then return {'backlog_full', '', '', ''} end
local score = NOW - tonumber(ARGV[5]) * PRIORITY_STEP
local fields = {'id', id, 'name', ARGV[7], 'pool', pool, 'data', ARGV[9],
  'maxAttempts', ARGV[10], 'timeout', ARGV[11], 'backoff', ARGV[12], 'priority', ARGV[5],
  'score', string.format('%.0f', score), 'createdAt', NOW, 'attempts', 0}
if ARGV[13] ~= '' then fields[#fields + 1] = 'requestId'; fields[#fields + 1] = ARGV[13] end
if ARGV[14] ~= '' then fields[#fields + 1] = 'traceparent'; fields[#fields + 1] = ARGV[14] end
if group ~= '' then fields[#fields + 1] = 'group'; fields[#fields + 1] = group end
if dedupe ~= '' then
  redis.call('SET', dedupe, id, 'PX', ttl)
  -- a simple key is let go when its job finishes (set_status)
  if mode == 'simple' then fields[#fields + 1] = 'dedupe'; fields[#fields + 1] = dedupe end
end
if delay > 0 then
  redis.call('HSET', KEYS[1], 'status', 'delayed', unpack(fields))
  indexed(id, 'delayed')
  emit('enqueued', id, ARGV[7], pool, 'delayed')
  redis.call('ZADD', KEYS[3], NOW + delay, id)
  wake(best)  -- so that it shortens its wait to the new due time
  return {'created', 'delayed', '', id}
end
if group ~= '' then  -- no consumer of its own: the pool serves its group in turn
  redis.call('HSET', KEYS[1], 'status', 'queued', unpack(fields))
  indexed(id, 'queued')
  emit('enqueued', id, ARGV[7], pool, 'queued')
  group_queue(id, pool, group, score)
  wake(best)
  return {'created', 'queued', '', id}
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', best, unpack(fields))
indexed(id, 'queued')
emit('enqueued', id, ARGV[7], pool, 'queued', {'worker', best})
-- a consumer with jobs waiting already has a wake-up pending, or is full and will claim
-- when a slot frees
if redis.call('ZCARD', ready_key(best)) == 0 then wake(best) end
redis.call('ZADD', ready_key(best), score, id)
ready_moved(best, pool, 1)
return {'created', 'queued', best, id}
