-- Take up to n jobs for one consumer: first the pool's due delayed jobs, then its own queue by
-- priority. Each taken job moves to the consumer's active set with a lease.
-- KEYS[1] ready:<cid>, KEYS[2] active:<cid>, KEYS[3] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] cid, ARGV[3] now ms, ARGV[4] n, ARGV[5] lease ms
-- Returns {{id, name, data, attempts, maxAttempts, timeout, backoff}...}, next due ms or false}
local cid, now, n, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
if n > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, n)) do
    redis.call('ZREM', KEYS[3], id)
    local score = redis.call('HGET', job_key(id), 'score')
    if score then
      redis.call('HSET', job_key(id), 'status', 'queued', 'worker', cid)
      redis.call('ZADD', KEYS[1], score, id)
    end
  end
  -- cancelled jobs are dropped as they come up, and do not use a slot
  while #out < n do
    local popped = redis.call('ZPOPMIN', KEYS[1], n - #out)
    if #popped == 0 then break end
    for i = 1, #popped, 2 do
      local id = popped[i]
      local key = job_key(id)
      local status = redis.call('HGET', key, 'status')
      if status and status ~= 'cancelled' then
        redis.call('ZADD', KEYS[2], now + lease, id)
        local attempts = redis.call('HINCRBY', key, 'attempts', 1)
        redis.call('HSET', key, 'status', 'active', 'worker', cid, 'startedAt', now)
        local f = redis.call('HMGET', key, 'name', 'data', 'maxAttempts', 'timeout', 'backoff')
        out[#out + 1] = {id, f[1], f[2], attempts, f[3], f[4], f[5]}
      end
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return {out, nxt[2] or false}
