-- A scheduler's due time came: make its job in its pool's store, once whichever node calls
-- (the job id is the scheduler's and the due time's). The caller read the due time and the
-- definition from the shared keys (another slot) and moves the scheduler on afterwards
-- (scheduler.lua, advance: compare and set on the due time). The job waits in
-- delayed:<pool>, due now, so that any live consumer of the pool claims it, or the first to
-- come back if none is live.
-- KEYS[1] job:<id>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] scheduler id, ARGV[4] the job's id, ARGV[5] the
-- scheduler's job fields (JSON: name pool data attempts timeout backoff priority)
-- Returns 1 when the job was made, 0 when it existed already.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local job_id, t = ARGV[4], cjson.decode(ARGV[5])
local score = NOW - tonumber(t.priority) * PRIORITY_STEP
redis.call('HSET', KEYS[1], 'status', 'queued', 'id', job_id, 'name', t.name,
  'pool', t.pool, 'data', t.data, 'maxAttempts', t.attempts, 'timeout', t.timeout,
  'backoff', t.backoff, 'priority', t.priority, 'score', string.format('%.0f', score),
  'createdAt', NOW, 'attempts', 0, 'scheduler', ARGV[3])
indexed(job_id, 'queued')
emit('enqueued', job_id, t.name, t.pool, 'queued')
redis.call('ZADD', delayed_key(t.pool), NOW, job_id)
local best = least_loaded(t.pool)
if best then wake(best) end
return 1
