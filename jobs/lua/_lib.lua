-- Shared helpers, prepended to every script by jobs/scripts.py.
-- Every key is built from the prefix (a hash tag such as "{mq}"), so all of them share one slot.
local P = ARGV[1]
local function job_key(id) return P .. ':job:' .. id end
local function ready_key(cid) return P .. ':ready:' .. cid end
local function active_key(cid) return P .. ':active:' .. cid end
local function wake_key(cid) return P .. ':wake:' .. cid end
local function delayed_key(pool) return P .. ':delayed:' .. pool end
local function workers_key(pool) return P .. ':workers:' .. pool end
local STATS = P .. ':stats'
local DLQ = P .. ':dlq'

-- One token is enough to wake a consumer: it claims everything it has room for.
local function wake(cid)
  local key = wake_key(cid)
  if redis.call('LLEN', key) == 0 then redis.call('RPUSH', key, '1') end
end

local function wake_live(pool, now)
  for _, cid in ipairs(redis.call('ZRANGEBYSCORE', workers_key(pool), now, '+inf')) do
    wake(cid)
  end
end

local function dead_letter(id, now, err, tb, dlq_max)
  local key = job_key(id)
  redis.call('HSET', key, 'status', 'dead', 'error', err, 'traceback', tb,
    'completedAt', now, 'failedAt', now)
  redis.call('HINCRBY', STATS, 'deadLettered', 1)
  redis.call('ZADD', DLQ, now, id)
  local over = redis.call('ZCARD', DLQ) - dlq_max
  if over > 0 then
    for _, old in ipairs(redis.call('ZPOPMIN', DLQ, over)) do
      if redis.call('HGET', job_key(old), 'status') == 'dead' then redis.call('DEL', job_key(old)) end
    end
    redis.call('HINCRBY', STATS, 'dlqDropped', math.floor(over))
  end
end

-- Hand the jobs of a consumer that died (or lost its lease) back to its pool: due now,
-- claimable by any live consumer. A job whose process died under it too often is dead-lettered.
local function orphan(id, pool, now, crashed, max_crashes, dlq_max)
  local key = job_key(id)
  local status = redis.call('HGET', key, 'status')
  if not status then return end
  if status == 'cancelled' then
    redis.call('HSET', key, 'completedAt', now)
    redis.call('PEXPIRE', key, 86400000)
    return
  end
  if crashed then
    -- a try cut short by its process dying is not counted as a try; the crash is
    redis.call('HINCRBY', key, 'attempts', -1)
    local crashes = redis.call('HINCRBY', key, 'crashes', 1)
    if crashes >= max_crashes then
      dead_letter(id, now, 'process died while running this job ' .. crashes .. ' times', '', dlq_max)
      return
    end
  end
  redis.call('HSET', key, 'status', 'queued')
  redis.call('ZADD', delayed_key(pool), now, id)
end
