-- Pools that hold jobs but are not configured (removed from POOLS): their jobs would wait for
-- ever unless moved (move_pool.lua).
-- KEYS[1] pools
-- ARGV[1] prefix, ARGV[2] now, ARGV[3..] the configured pools
-- Returns {pool, jobs waiting in it, ...}.
local configured = {}
for i = 3, #ARGV do configured[ARGV[i]] = true end
local out = {}
for _, pool in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not configured[pool] then
    local count = redis.call('ZCARD', delayed_key(pool))
    for _, cid in ipairs(redis.call('ZRANGE', workers_key(pool), 0, -1)) do
      count = count + redis.call('ZCARD', ready_key(cid)) + redis.call('ZCARD', active_key(cid))
    end
    if count > 0 then
      out[#out + 1] = pool
      out[#out + 1] = count
    end
  end
end
return out
