-- A scheduler's due time came: make its job (once per due time, whichever node calls) and move
-- the scheduler on. The caller read the due time and worked out the next one; a scheduler
-- moved on, changed or deleted since then is left as it is (compare and set on its due time).
-- The job waits in delayed:<pool>, due now, so that any live consumer of the pool claims it,
-- or the first to come back if none is live.
-- KEYS[1] schedule, KEYS[2] schedulers
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] scheduler id, ARGV[4] the due time read (ms),
-- ARGV[5] the job's id ('' to make none: a missed run skipped), ARGV[6] the next due time
-- (ms, '' when the scheduler has ended)
-- Returns {outcome, job id}: outcome is fired (job id '' when none was made, or when the job
-- existed already) or moved.
local id = ARGV[3]
local due = redis.call('ZSCORE', KEYS[1], id)
if not due or tonumber(due) ~= tonumber(ARGV[4]) then return {'moved', ''} end
local raw = redis.call('HGET', KEYS[2], id)
if not raw then
  redis.call('ZREM', KEYS[1], id)
  return {'moved', ''}
end
local made = ''
local job_id = ARGV[5]
if job_id ~= '' and redis.call('EXISTS', job_key(job_id)) == 0 then
  local t = cjson.decode(raw).job
  local score = NOW - tonumber(t.priority) * PRIORITY_STEP
  redis.call('HSET', job_key(job_id), 'status', 'queued', 'id', job_id, 'name', t.name,
    'pool', t.pool, 'data', t.data, 'maxAttempts', t.attempts, 'timeout', t.timeout,
    'backoff', t.backoff, 'priority', t.priority, 'score', string.format('%.0f', score),
    'createdAt', NOW, 'attempts', 0, 'scheduler', id)
  indexed(job_id, 'queued')
  emit('enqueued', job_id, t.name, t.pool, 'queued')
  redis.call('ZADD', delayed_key(t.pool), NOW, job_id)
  local best, best_load = nil, nil
  for _, cid in ipairs(accepting(t.pool)) do
    local load = redis.call('ZCARD', ready_key(cid)) + redis.call('ZCARD', active_key(cid))
    if best_load == nil or load < best_load then best, best_load = cid, load end
  end
  if best then wake(best) end
  made = job_id
end
if ARGV[6] == '' then redis.call('ZREM', KEYS[1], id)
else redis.call('ZADD', KEYS[1], ARGV[6], id) end
return {'fired', made}
