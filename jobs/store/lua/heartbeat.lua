-- A consumer's heartbeat: mark it live and renew the leases of the tries it still holds.
-- KEYS[1] workers:<pool>, KEYS[2] worker:<cid>, KEYS[3] active:<cid>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] cid, ARGV[4] instance, ARGV[5] ttl ms, ARGV[6] lease ms,
-- ARGV[7] keep ms, ARGV[8] '*' to renew every lease of the consumer (the master keeping a busy
-- process alive) or '', ARGV[9..] id, token, id, token... of its running tries
-- Returns {'ok', stale ids} or {'gone'}: the slot belongs to another instance, or was handed
-- back (this process was declared dead; its tries are void).
local cid = ARGV[3]
if redis.call('HGET', KEYS[2], 'instance') ~= ARGV[4] then return {'gone', {}} end
redis.call('ZADD', KEYS[1], NOW + tonumber(ARGV[5]), cid)
redis.call('HSET', KEYS[2], 'lastSeen', NOW)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[7]))
local lease = NOW + tonumber(ARGV[6])
local stale = {}
if ARGV[8] == '*' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    redis.call('ZADD', KEYS[3], 'XX', lease, id)
  end
end
for i = 9, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', job_key(id), 'token') == token and redis.call('ZSCORE', KEYS[3], id) then
    redis.call('ZADD', KEYS[3], lease, id)
  else
    stale[#stale + 1] = id
  end
end
return {'ok', stale}
