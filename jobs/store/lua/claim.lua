-- Take up to n jobs for one consumer: the pool's due delayed jobs, then its own queue, then
-- (work stealing) the most loaded live peer's queue, highest priority first. Each try gets a
-- lease in active:<cid> and a new token.
-- KEYS[1] ready:<cid>, KEYS[2] active:<cid>, KEYS[3] delayed:<pool>, KEYS[4] workers:<pool>,
-- KEYS[5] draining:<pool>, KEYS[6] worker:<cid>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] cid, ARGV[4] pool, ARGV[5] n, ARGV[6] lease ms,
-- ARGV[7] instance
-- Returns {state, tries, ms until the next delayed job is due (or the limit lets one start) or
-- -1}: state is ok, draining, paused, limited (the pool's rate or concurrency is used up) or
-- gone (the slot belongs to another instance: this one was declared dead). Each try is
-- {id, token, name, data, attempt, maxAttempts, timeout, backoff, ms it waited (since it was
-- due, or created), request id, traceparent}.
local cid, pool, n, lease = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local slot = redis.call('HMGET', KEYS[6], 'instance', 'gate')
if slot[1] ~= ARGV[7] then return {'gone', {}, -1} end
if redis.call('SISMEMBER', KEYS[5], cid) == 1 then return {'draining', {}, -1} end

-- A gated pool (paused or limited): how many may start now, and the caps of job names.
local limit = nil
if slot[2] then
  local c = redis.call('HMGET', control_key(pool), 'paused', 'limits', 'caps', 'holdUntil')
  if c[1] then return {'paused', {}, -1} end
  local hold = tonumber(c[4] or 0) - NOW
  if hold > 0 then return {'limited', {}, hold} end
  if not (c[2] or c[3]) then
    redis.call('HDEL', KEYS[6], 'gate')  -- nothing left to enforce: claims skip this again
  else
    local ok, l = pcall(cjson.decode, c[2] or '{}')
    if not ok or type(l) ~= 'table' then l = {} end
    local okc, caps = pcall(cjson.decode, c[3] or '{}')
    if not okc or type(caps) ~= 'table' then caps = {} end
    limit = {names = {}, running = running_key(pool)}
    for name, cap in pairs(caps) do limit.names[name] = tonumber(cap) end
    if type(l.jobs) == 'table' then
      for name, spec in pairs(l.jobs) do
        if type(spec) == 'table' and tonumber(spec.concurrency) then
          limit.names[name] = tonumber(spec.concurrency)
        end
      end
    end
    if tonumber(l.concurrency) then
      local running = tonumber(redis.call('HGET', limit.running, 'all') or 0)
      n = math.min(n, tonumber(l.concurrency) - running)
      if n <= 0 then return {'limited', {}, -1} end  -- a try's end wakes the pool
    end
    if type(l.rate) == 'table' and tonumber(l.rate.max) and tonumber(l.rate.period) then
      local period = tonumber(l.rate.period) * 1000
      limit.starts = starts_key(pool)
      redis.call('ZREMRANGEBYSCORE', limit.starts, '-inf', NOW - period)
      local room = tonumber(l.rate.max) - redis.call('ZCARD', limit.starts)
      if room <= 0 then
        local oldest = redis.call('ZRANGE', limit.starts, 0, 0, 'WITHSCORES')
        return {'limited', {}, math.max(1, tonumber(oldest[2] or NOW) + period - NOW)}
      end
      n = math.min(n, room)
      limit.period = period
    end
  end
end

local out = {}
local examined = 0  -- jobs looked at: parked ones too, so a claim stays bounded
local function take(id, since)
  local key = job_key(id)
  examined = examined + 1
  local status = redis.call('HGET', key, 'status')
  if status ~= 'queued' and status ~= 'delayed' and status ~= 'failed' then return end
  local name = limit and (redis.call('HGET', key, 'name') or '')
  if limit then
    local cap = limit.names[name]
    if cap and tonumber(redis.call('HGET', limit.running, 'n:' .. name) or 0) >= cap then
      redis.call('HSET', key, 'waitingFor', 'the concurrency cap of ' .. name)
      redis.call('ZADD', parked_key(pool, name), NOW, id)
      return
    end
  end
  local token = redis.call('HINCRBY', key, 'claims', 1) .. '-' .. NOW
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  set_status(id, 'active', 'started', {'worker', cid, 'attempt', attempts})
  redis.call('HSET', key, 'worker', cid, 'startedAt', NOW, 'token', token)
  if limit then  -- counted until it leaves active (release, in set_status)
    redis.call('HINCRBY', limit.running, 'all', 1)
    redis.call('HINCRBY', limit.running, 'n:' .. name, 1)
    redis.call('HSET', key, 'held', '1')
  end
  redis.call('ZADD', KEYS[2], NOW + lease, id)
  local f = redis.call('HMGET', key, 'name', 'data', 'maxAttempts', 'timeout', 'backoff',
    'createdAt', 'requestId', 'traceparent')
  local waited = math.max(0, NOW - (since or tonumber(f[6]) or NOW))
  out[#out + 1] = {id, token, f[1], f[2], attempts, f[3], f[4], f[5], waited, f[7], f[8]}
  if limit and limit.starts then
    redis.call('ZADD', limit.starts, NOW, id .. ':' .. token)
    redis.call('PEXPIRE', limit.starts, limit.period)
  end
end
local function pop(queue)
  while #out < n and examined < n + 100 do
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
