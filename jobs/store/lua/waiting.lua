-- How many jobs a pool holds: its delayed set, and its consumers' queues and tries (a pool
-- removed from POOLS still holding jobs is told at start; move_pool.lua moves them).
-- KEYS[1] workers:<pool>, KEYS[2] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] now
-- Returns the count.
local count = redis.call('ZCARD', KEYS[2])
for _, cid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  count = count + redis.call('ZCARD', ready_key(cid)) + redis.call('ZCARD', active_key(cid))
end
return count
