-- Write or delete a job scheduler. A scheduler is due when its entry in schedule comes; a
-- paused or ended one keeps its definition and has no entry.
-- KEYS[1] schedulers, KEYS[2] schedule
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id, ARGV[4] what: put (ARGV[5] the definition JSON,
-- ARGV[6] the next due time in ms or '' for none), delete, or advance (a due time's job was
-- made in its pool's store, fire.lua: ARGV[5] the due time read, ARGV[6] the next one or ''
-- when it ended; nothing changes if the scheduler moved on, changed or went since)
-- Returns 1 when the scheduler existed before (advance: when it moved now), else 0.
local id = ARGV[3]
if ARGV[4] == 'advance' then
  local due = redis.call('ZSCORE', KEYS[2], id)
  if not due or tonumber(due) ~= tonumber(ARGV[5]) then return 0 end
  if ARGV[6] == '' or redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('ZREM', KEYS[2], id)
  else
    redis.call('ZADD', KEYS[2], ARGV[6], id)
  end
  return 1
end
local existed = redis.call('HEXISTS', KEYS[1], id)
if ARGV[4] == 'delete' then
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  return existed
end
redis.call('HSET', KEYS[1], id, ARGV[5])
if ARGV[6] == '' then redis.call('ZREM', KEYS[2], id)
else redis.call('ZADD', KEYS[2], ARGV[6], id) end
return existed
