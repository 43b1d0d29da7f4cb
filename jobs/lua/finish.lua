-- Record how one try of a job ended and release its slot.
-- KEYS[1] job hash, KEYS[2] active:<cid>, KEYS[3] ready:<cid>, KEYS[4] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] id, ARGV[3] cid, ARGV[4] outcome (completed|retry|dead|cancelled|requeue),
-- ARGV[5] now ms, ARGV[6] result json or error text, ARGV[7] traceback, ARGV[8] retry delay ms,
-- ARGV[9] keep result ms, ARGV[10] dlq max, ARGV[11] '1' to wake the consumer's own loop
-- Returns the job's status afterwards, or false when this consumer no longer held the job.
local id, cid, outcome, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if ARGV[11] == '1' then wake(cid) end
local held = redis.call('ZREM', KEYS[2], id)
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local keep = tonumber(ARGV[9])
if status == 'cancelled' then
  redis.call('HSET', KEYS[1], 'completedAt', now)
  redis.call('PEXPIRE', KEYS[1], keep)
  return 'cancelled'
end
-- the lease was taken back and the job handed to another consumer: that run decides
if held == 0 then return false end
if outcome == 'completed' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'result', ARGV[6], 'completedAt', now)
  redis.call('HDEL', KEYS[1], 'error')
  redis.call('HINCRBY', STATS, 'completed', 1)
  redis.call('PEXPIRE', KEYS[1], keep)
elseif outcome == 'retry' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[6])
  redis.call('HINCRBY', STATS, 'failed', 1)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[8]), id)
elseif outcome == 'dead' then
  redis.call('HINCRBY', STATS, 'failed', 1)
  dead_letter(id, now, ARGV[6], ARGV[7], tonumber(ARGV[10]))
elseif outcome == 'cancelled' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completedAt', now)
  redis.call('PEXPIRE', KEYS[1], keep)
elseif outcome == 'requeue' then
  -- stopped by a shutdown: not a try; back to the head of its priority in its own queue
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  redis.call('HSET', KEYS[1], 'status', 'queued')
  redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'score'), id)
end
return redis.call('HGET', KEYS[1], 'status')
