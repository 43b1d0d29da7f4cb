-- Record how one try ended and release its lease, only while the try holds the job.
-- KEYS[1] job:<id>, KEYS[2] active:<cid>, KEYS[3] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id, ARGV[4] cid, ARGV[5] token,
-- ARGV[6] outcome (completed|failed|dead|cancelled|requeue|limited: the job asked for its pool
-- to be rate limited for the retry delay; not a try), ARGV[7] result JSON or error,
-- ARGV[8] traceback, ARGV[9] retry delay ms, ARGV[10] keep ms, ARGV[11] dlq max,
-- ARGV[12] pool, ARGV[13] history ms, ARGV[14] the error as the try's record keeps it (shortened)
-- Returns {'ok', status afterwards} or {'stale', status}: the try no longer held the job (its
-- lease lapsed and another try took it, or it was handed back), and nothing was recorded.
local id, cid, outcome = ARGV[3], ARGV[4], ARGV[6]
local keep, pool = tonumber(ARGV[10]), ARGV[12]
local r = redis.call('HMGET', KEYS[1], unpack(FINISHED_FIELDS))  -- read once for the hot path
local status = r[1]
if not status or r[7] ~= ARGV[5] or redis.call('ZREM', KEYS[2], id) == 0 then
  return {'stale', status or ''}
end
held_moved(cid, pool, -1)
if status == 'cancelled' then
  record_try(id, 'cancelled', '')
  finished(id, 'cancelled', keep)
  return {'ok', 'cancelled'}
end
local o = {dlq_max = tonumber(ARGV[11]), max_backoff = 0, history = tonumber(ARGV[13])}
if outcome == 'completed' then  -- the hot path: the try, the result and the status in one write
  local fields = {'result', ARGV[7]}
  record_try(id, 'completed', '', fields, {r[8], r[9], r[10], r[11]})
  count(pool, 'completed', o.history)
  finished(id, 'completed', keep, fields, 'error', r)
  return {'ok', 'completed'}
end
if outcome == 'requeue' then
  record_try(id, 'handed back', '')
elseif outcome == 'limited' then
  record_try(id, 'rate limited', '')
elseif outcome == 'cancelled' then
  record_try(id, outcome, '')
else
  record_try(id, 'failed', ARGV[14])  -- failed or dead: the try failed either way
end
if outcome == 'failed' then
  return {'ok', failed_try(id, ARGV[7], ARGV[8], tonumber(ARGV[9]), o)}
elseif outcome == 'dead' then
  count(pool, 'failed', o.history)
  dead_letter(id, ARGV[7], ARGV[8], o)
elseif outcome == 'cancelled' then
  finished(id, 'cancelled', keep)
elseif outcome == 'requeue' or outcome == 'limited' then
  -- stopped by a shutdown, or rate limited from inside: not a try; back to its pool
  local due = NOW
  if outcome == 'limited' then
    due = NOW + (tonumber(ARGV[9]) or 0)
    local control = control_key(pool)
    if due > tonumber(redis.call('HGET', control, 'holdUntil') or 0) then
      redis.call('HSET', control, 'holdUntil', due)
    end
    set_gates(pool)
  end
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  set_status(id, 'queued')
  redis.call('HDEL', KEYS[1], 'token', 'worker')
  redis.call('ZADD', KEYS[3], due, id)
  if due == NOW then wake_pool(pool) end
end
return {'ok', redis.call('HGET', KEYS[1], 'status')}
