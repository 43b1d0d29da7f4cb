-- A consumer process takes its slot: it becomes the slot's instance and is live.
-- KEYS[1] workers:<pool>, KEYS[2] worker:<cid>, KEYS[3] draining:<pool>, KEYS[4] wake:<cid>
-- (the pool registry, another slot, is told by the caller)
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] cid, ARGV[4] pool, ARGV[5] instance, ARGV[6] ttl ms,
-- ARGV[7] info (JSON), ARGV[8] keep ms, ARGV[9] the concurrency caps of its jobs (JSON
-- {<name>: n}, from @job(max_concurrency); '' for none)
-- Returns {'ok'} or {'taken', previous instance}: the slot still holds the jobs of a previous
-- instance, to be handed back (recover.lua) first.
local cid, pool = ARGV[3], ARGV[4]
local previous = redis.call('HGET', KEYS[2], 'instance')
if previous and previous ~= ARGV[5] then
  if redis.call('ZCARD', active_key(cid)) + redis.call('ZCARD', ready_key(cid)) > 0 then
    return {'taken', previous}
  end
end
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[3], cid)
-- versions before INDEXED kept these two (and do while a rolling upgrade runs them beside
-- this one): each consumer that starts drops them, without blocking the server
redis.call('UNLINK', status_index('queued'), status_index('active'))
redis.call('HSET', KEYS[2], 'instance', ARGV[5], 'info', ARGV[7], 'lastSeen', NOW, 'pool', pool)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[8]))
redis.call('ZADD', KEYS[1], NOW + tonumber(ARGV[6]), cid)
redis.call('ZADD', load_key(pool), redis.call('ZCARD', active_key(cid)) +
  redis.call('ZCARD', ready_key(cid)), cid)
local control = control_key(pool)
if ARGV[9] ~= (redis.call('HGET', control, 'caps') or '') then
  if ARGV[9] == '' then redis.call('HDEL', control, 'caps')
  else redis.call('HSET', control, 'caps', ARGV[9]) end
  set_gates(pool)
elseif gated(pool) then
  redis.call('HSET', KEYS[2], 'gate', '1')
else
  redis.call('HDEL', KEYS[2], 'gate')
end
wake(cid)
return {'ok'}
