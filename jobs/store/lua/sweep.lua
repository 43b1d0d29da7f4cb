-- One consumer per pool at a time (a short lock) takes back the jobs of the pool's consumers
-- whose heartbeat lapsed, and the tries of live consumers whose lease lapsed, in a bounded batch;
-- and deletes a batch of finished records whose keep time is over.
-- KEYS[1] workers:<pool>, KEYS[2] sweep:<pool>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] max crashes, ARGV[4] dlq max, ARGV[5] keep ms,
-- ARGV[6] max backoff ms, ARGV[7] batch, ARGV[8] pool, ARGV[9] history ms, ARGV[10] sweeper
-- cid, ARGV[11] lock ms
-- Returns {state, moved, ended}: state is locked (another consumer sweeps), done or more;
-- ended the tries it ended (name, outcome, ...; see ENDED).
local o = recover_options()
local lock = redis.call('GET', KEYS[2])
if lock and lock ~= ARGV[10] then return {'locked', 0} end
redis.call('SET', KEYS[2], ARGV[10], 'PX', tonumber(ARGV[11]))
prune(o.batch)
local moved, budget = 0, o.batch
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. NOW)) do
  if budget <= 0 then break end
  local m, done = hand_back(cid, o.pool, budget, o)
  moved, budget = moved + m, budget - math.max(m, 1)
  if not done then budget = 0 end
end
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], NOW, '+inf')) do
  if budget <= 0 then break end
  local lapsed = redis.call('ZRANGEBYSCORE', active_key(cid), '-inf', '(' .. NOW, 'LIMIT', 0,
    budget)
  for _, id in ipairs(lapsed) do
    redis.call('ZREM', active_key(cid), id)
    if orphan(id, o.pool, o) then moved = moved + 1 end
    budget = budget - 1
  end
  held_moved(cid, o.pool, -#lapsed)
end
if moved > 0 then wake_pool(o.pool) end
return {budget <= 0 and 'more' or 'done', moved, ENDED}
