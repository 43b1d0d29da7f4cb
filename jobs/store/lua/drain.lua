-- A consumer starts draining: it takes no new job, stays registered and heart-beating while its
-- running tries end, and hands its queue back to the pool (a bounded batch; call again while it
-- answers more).
-- KEYS[1] draining:<pool>, KEYS[2] ready:<cid>, KEYS[3] worker:<cid>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] cid, ARGV[4] pool, ARGV[5] instance, ARGV[6] batch
-- Returns {state, moved}: state is more, done or gone.
local cid, pool = ARGV[3], ARGV[4]
if redis.call('HGET', KEYS[3], 'instance') ~= ARGV[5] then return {'gone', 0} end
redis.call('SADD', KEYS[1], cid)
redis.call('ZREM', load_key(pool), cid)
local moved, left = 0, 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[6]) - 1)) do
  redis.call('ZREM', KEYS[2], id)
  left = left + 1
  if unassign(id, pool) then moved = moved + 1 end
end
queued_moved(pool, -left)  -- a draining consumer has no entry in load:<pool> to keep
if moved > 0 then wake_pool(pool) end
return {redis.call('ZCARD', KEYS[2]) > 0 and 'more' or 'done', moved}
