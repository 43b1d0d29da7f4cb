-- Give back the jobs of consumers that are gone, and of leases that lapsed.
-- KEYS[1] workers:<pool>, KEYS[2] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] pool, ARGV[3] now ms, ARGV[4] max crashes, ARGV[5] dlq max,
-- ARGV[6] cid of a consumer known to be dead ('' for none)
-- Consumers that are dead or whose heartbeat lapsed lose their queue and their running jobs (each
-- counts as a crash of that job); live consumers lose only the running jobs whose lease lapsed.
-- Returns the number of jobs handed back.
local pool, now = ARGV[2], tonumber(ARGV[3])
local max_crashes, dlq_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local moved = 0
local function give_back_active(cid, upto, crashed)
  local ids = redis.call('ZRANGEBYSCORE', active_key(cid), '-inf', upto)
  for _, id in ipairs(ids) do
    redis.call('ZREM', active_key(cid), id)
    orphan(id, pool, now, crashed, max_crashes, dlq_max)
    moved = moved + 1
  end
end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[1], 0, ARGV[6]) end
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  give_back_active(cid, '+inf', true)
  for _, id in ipairs(redis.call('ZRANGE', ready_key(cid), 0, -1)) do
    orphan(id, pool, now, false, max_crashes, dlq_max)
    moved = moved + 1
  end
  redis.call('DEL', ready_key(cid), wake_key(cid))
  redis.call('ZREM', KEYS[1], cid)
end
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  give_back_active(cid, now, false)
end
if moved > 0 then wake_live(pool, now) end
return moved
