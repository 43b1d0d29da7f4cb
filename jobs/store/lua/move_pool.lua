-- Move the jobs of a pool that is no longer served (removed from POOLS) to another pool: the
-- source's half. Each pool is a slot of its own, so a move is a copy, then a delete: this
-- script answers a batch of jobs to copy, the target takes them in (adopt.lua), and the next
-- call here deletes those the target holds now. A crash between the two leaves a job in both
-- stores, never in none; the copy in the source is deleted by the next call. Call again while
-- it answers more. Refused while a consumer of the source is live.
-- KEYS[1] workers:<from>, KEYS[2] delayed:<from>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] max crashes, ARGV[4] dlq max, ARGV[5] keep ms,
-- ARGV[6] max backoff ms, ARGV[7] batch, ARGV[8] from pool, ARGV[9] history ms, ARGV[10] to pool,
-- ARGV[11..] ids the target holds now (deleted here)
-- Returns {state, jobs}: state is live (refused), more or done; jobs {id, due ms, record as a
-- flat field/value list} to copy.
local o = recover_options()
if redis.call('ZCOUNT', KEYS[1], NOW, '+inf') > 0 then return {'live', {}} end
for i = 11, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  delete_job(ARGV[i])
end
local budget = o.batch
for _, cid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if budget <= 0 then break end
  local m = hand_back(cid, o.pool, budget, o)
  budget = budget - math.max(m, 1)
end
local out = {}
local batch = redis.call('ZRANGE', KEYS[2], 0, math.max(budget, 1) - 1, 'WITHSCORES')
for i = 1, #batch, 2 do
  local record = redis.call('HGETALL', job_key(batch[i]))
  if #record == 0 then
    redis.call('ZREM', KEYS[2], batch[i])
  else
    out[#out + 1] = {batch[i], batch[i + 1], record}
  end
end
if #out == 0 and redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) == 0 then
  return {'done', {}}
end
return {'more', out}
