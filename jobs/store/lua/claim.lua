-- Take up to n jobs for one consumer: the pool's due delayed jobs, then its own queue, then
-- (work stealing) the most loaded live peer's queue, highest priority first. Each try gets a
-- lease in active:<cid> and a new token.
-- KEYS[1] ready:<cid>, KEYS[2] active:<cid>, KEYS[3] delayed:<pool>, KEYS[4] workers:<pool>,
-- KEYS[5] draining:<pool>, KEYS[6] worker:<cid>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] cid, ARGV[4] pool, ARGV[5] n, ARGV[6] lease ms,
-- ARGV[7] instance
-- Returns {state, tries, ms until the next delayed job is due or -1}: state is ok, draining or
-- gone (the slot belongs to another instance: this one was declared dead). Each try is
-- {id, token, name, data, attempt, maxAttempts, timeout, backoff, ms it waited (since it was
-- due, or created), request id, traceparent}.
local cid, pool, n, lease = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('HGET', KEYS[6], 'instance') ~= ARGV[7] then return {'gone', {}, -1} end
if redis.call('SISMEMBER', KEYS[5], cid) == 1 then return {'draining', {}, -1} end
local out = {}
local function take(id, since)
  local key = job_key(id)
  local status = redis.call('HGET', key, 'status')
  if status ~= 'queued' and status ~= 'delayed' and status ~= 'failed' then return end
  local token = redis.call('HINCRBY', key, 'claims', 1) .. '-' .. NOW
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  set_status(id, 'active', 'started', {'worker', cid, 'attempt', attempts})
  redis.call('HSET', key, 'worker', cid, 'startedAt', NOW, 'token', token)
  redis.call('ZADD', KEYS[2], NOW + lease, id)
  local f = redis.call('HMGET', key, 'name', 'data', 'maxAttempts', 'timeout', 'backoff',
    'createdAt', 'requestId', 'traceparent')
  local waited = math.max(0, NOW - (since or tonumber(f[6]) or NOW))
  out[#out + 1] = {id, token, f[1], f[2], attempts, f[3], f[4], f[5], waited, f[7], f[8]}
end
local function pop(queue)
  while #out < n do
    local popped = redis.call('ZPOPMIN', queue, n - #out)
    if #popped == 0 then return end
    for i = 1, #popped, 2 do take(popped[i]) end
  end
end
if n > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, n)
  for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[3], due[i])
    take(due[i], tonumber(due[i + 1]))
  end
  pop(KEYS[1])
  if #out < n then
    local victim, most = nil, 0
    for _, peer in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], NOW, '+inf')) do
      if peer ~= cid then
        local queued = redis.call('ZCARD', ready_key(peer))
        if queued > most then victim, most = peer, queued end
      end
    end
    if victim then pop(ready_key(victim)) end
  end
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local due = -1
if nxt[2] then due = math.max(0, tonumber(nxt[2]) - NOW) end
return {'ok', out, due}
