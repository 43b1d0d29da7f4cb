-- Take up to n jobs for one consumer: the pool's due delayed jobs, then its groups' queues in
-- turn (one job per group per round, each group under its own limits), then its own queue,
-- then (work stealing) the most loaded live peer's queue, highest priority first. Each try
-- gets a lease in active:<cid> and a new token.
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
  local c = redis.call('HMGET', control_key(pool), 'paused', 'limits', 'caps', 'holdUntil',
    'grouped')
  if c[1] then return {'paused', {}, -1} end
  local hold = tonumber(c[4] or 0) - NOW
  if hold > 0 then return {'limited', {}, hold} end
  if not (c[2] or c[3] or c[5]) then
    redis.call('HDEL', KEYS[6], 'gate')  -- nothing left to enforce: claims skip this again
  else
    local ok, l = pcall(cjson.decode, c[2] or '{}')
    if not ok or type(l) ~= 'table' then l = {} end
    local okc, caps = pcall(cjson.decode, c[3] or '{}')
    if not okc or type(caps) ~= 'table' then caps = {} end
    limit = {names = {}, running = running_key(pool), grouped = c[5] ~= false}
    if type(l.groups) == 'table' then
      limit.group_cap = tonumber(l.groups.concurrency)
      local r = l.groups.rate
      if type(r) == 'table' and tonumber(r.max) and tonumber(r.period) then
        limit.group_max, limit.group_period = tonumber(r.max), tonumber(r.period) * 1000
      end
    end
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
local taken, popped_from = 0, {}  -- for the load index, told once at the end
local examined = 0  -- jobs looked at: parked ones too, so a claim stays bounded
local function take(id, since)
  local key = job_key(id)
  examined = examined + 1
  local f = redis.call('HMGET', key, unpack(CLAIMED_FIELDS))
  local status, name = f[1], f[3] or ''
  if status ~= 'queued' and status ~= 'delayed' and status ~= 'failed' then return end
  if limit then
    local cap = limit.names[name]
    if cap and tonumber(redis.call('HGET', limit.running, 'n:' .. name) or 0) >= cap then
      redis.call('HSET', key, 'waitingFor', 'the concurrency cap of ' .. name)
      redis.call('ZADD', parked_key(pool, name), NOW, id)
      return
    end
  end
  local claims = (tonumber(f[14]) or 0) + 1
  local token = string.format('%d-%d', claims, NOW)
  local attempts = (tonumber(f[15]) or 0) + 1
  set_status(id, 'active', 'started', {'worker', cid, 'attempt', attempts},
    {'worker', cid, 'startedAt', NOW, 'token', token, 'claims', claims, 'attempts', attempts}, f)
  if limit then  -- counted until it leaves active (release, in set_status)
    redis.call('HINCRBY', limit.running, 'all', 1)
    redis.call('HINCRBY', limit.running, 'n:' .. name, 1)
    redis.call('HSET', key, 'held', '1')
  end
  redis.call('ZADD', KEYS[2], NOW + lease, id)
  taken = taken + 1
  if limit and f[13] then
    redis.call('HINCRBY', limit.running, 'g:' .. f[13], 1)
    if limit.group_max then
      local starts = gstarts_key(pool, f[13])
      redis.call('ZADD', starts, NOW, id .. ':' .. token)
      redis.call('PEXPIRE', starts, limit.group_period)
    end
  end
  local waited = math.max(0, NOW - (since or tonumber(f[2]) or NOW))
  out[#out + 1] = {id, token, name, f[7], attempts, f[8], f[9], f[10], waited, f[11], f[12]}
  if limit and limit.starts then
    redis.call('ZADD', limit.starts, NOW, id .. ':' .. token)
    redis.call('PEXPIRE', limit.starts, limit.period)
  end
end
local function pop(owner)
  local queue = ready_key(owner)
  while #out < n and examined < n + 100 do
    local popped = redis.call('ZPOPMIN', queue, n - #out)
    if #popped == 0 then return end
    popped_from[owner] = (popped_from[owner] or 0) + #popped / 2
    for i = 1, #popped, 2 do take(popped[i]) end
  end
end
-- One round: one job from each group in turn that its limits let start, at most
-- GROUPS_PER_ROUND groups looked at. Returns how many started, and when a group held back by
-- its rate limit may start one (ms from now, or nil).
local GROUPS_PER_ROUND = 100
local function serve_groups()
  local turns, started, wait = groups_key(pool), 0, nil
  local round = redis.call('ZRANGE', turns, 0, GROUPS_PER_ROUND - 1)
  for _, group in ipairs(round) do
    if #out >= n then break end
    local queue = group_key(pool, group)
    local room = true
    if limit.group_cap and
        tonumber(redis.call('HGET', limit.running, 'g:' .. group) or 0) >= limit.group_cap then
      room = false  -- a try's end wakes the pool
    end
    if room and limit.group_max then
      local starts = gstarts_key(pool, group)
      redis.call('ZREMRANGEBYSCORE', starts, '-inf', NOW - limit.group_period)
      if redis.call('ZCARD', starts) >= limit.group_max then
        room = false
        local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
        local opens = math.max(1, tonumber(oldest[2] or NOW) + limit.group_period - NOW)
        if not wait or opens < wait then wait = opens end
      end
    end
    while room do
      local head = redis.call('ZRANGE', queue, 0, 0)[1]
      if not head then
        redis.call('ZREM', turns, group)  -- nothing queued: out of the turn
        break
      end
      group_unqueue(head, pool, group)
      local before = #out
      take(head)
      if #out > before then
        started = started + 1
        local last = redis.call('ZRANGE', turns, -1, -1, 'WITHSCORES')
        redis.call('ZADD', turns, tonumber(last[2]) + 1, group)  -- to the end of the turn
        if redis.call('ZCARD', queue) == 0 then redis.call('ZREM', turns, group) end
        break
      end
      if examined >= n + 100 then break end
    end
  end
  return started, wait
end

local STEAL_LOOK = 16
local group_wait = nil
if n > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, n)
  for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[3], due[i])
    local group = limit and limit.grouped and redis.call('HGET', job_key(due[i]), 'group')
    if group then  -- a grouped job due again (a retry, a hand-back) waits in its group's turn
      local score = tonumber(redis.call('HGET', job_key(due[i]), 'score')) or NOW
      group_queue(due[i], pool, group, score)
    else
      take(due[i], tonumber(due[i + 1]))
    end
  end
  if limit and limit.grouped then
    while #out < n and examined < n + 100 do
      local started, wait = serve_groups()
      group_wait = wait
      if started == 0 then break end
    end
  end
  pop(cid)
  if #out < n then
    -- of the most loaded peers (a bounded look), the live one with the longest queue
    local victim, most = nil, 0
    for _, peer in ipairs(redis.call('ZREVRANGE', load_key(pool), 0, STEAL_LOOK - 1)) do
      if peer ~= cid and (tonumber(redis.call('ZSCORE', KEYS[4], peer)) or -1) >= NOW then
        local queued = redis.call('ZCARD', ready_key(peer))
        if queued > most then victim, most = peer, queued end
      end
    end
    if victim then pop(victim) end
  end
end
-- a job popped from its own queue and started stays in what the consumer holds
held_moved(cid, pool, taken - (popped_from[cid] or 0))
local unqueued = 0
for owner, popped in pairs(popped_from) do
  if owner ~= cid then held_moved(owner, pool, -popped) end
  unqueued = unqueued + popped
end
queued_moved(pool, -unqueued)
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local due = -1
if nxt[2] then due = math.max(0, tonumber(nxt[2]) - NOW) end
if group_wait and (due < 0 or group_wait < due) then due = group_wait end
return {'ok', out, due}
