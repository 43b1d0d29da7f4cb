-- Hand back the jobs of one consumer that is gone (its process died, or it is leaving), in a
-- bounded batch; call again while it answers 'more'.
-- KEYS[1] workers:<pool>, KEYS[2] worker:<cid>, KEYS[3] active:<cid>, KEYS[4] ready:<cid>,
-- KEYS[5] delayed:<pool>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] max crashes, ARGV[4] dlq max, ARGV[5] keep ms,
-- ARGV[6] max backoff ms, ARGV[7] batch, ARGV[8] pool, ARGV[9] history ms, ARGV[10] cid,
-- ARGV[11] instance that is gone ('' for whichever holds the slot)
-- Returns {state, moved, ended}: state is done, more, or other (a newer instance holds the
-- slot; it was left alone); ended the tries it ended (name, outcome, ...; see ENDED).
local o = recover_options()
local cid = ARGV[10]
local holder = redis.call('HGET', KEYS[2], 'instance')
if ARGV[11] ~= '' and holder and holder ~= ARGV[11] then return {'other', 0} end
local moved, done = hand_back(cid, o.pool, o.batch, o)
if moved > 0 then wake_pool(o.pool) end
return {done and 'done' or 'more', moved, ENDED}
