-- A consumer's heartbeat: mark it live, renew the leases of the jobs it runs.
-- KEYS[1] workers:<pool>, KEYS[2] worker:<cid> info hash, KEYS[3] active:<cid>
-- ARGV[1] prefix, ARGV[2] cid, ARGV[3] now ms, ARGV[4] heartbeat ttl ms, ARGV[5] lease ms,
-- ARGV[6] info as json, ARGV[7..] ids of the running jobs
local cid, now = ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), cid)
redis.call('HSET', KEYS[2], 'info', ARGV[6], 'lastSeen', now)
redis.call('PEXPIRE', KEYS[2], 86400000)
local lease = now + tonumber(ARGV[5])
for i = 7, #ARGV do redis.call('ZADD', KEYS[3], 'XX', lease, ARGV[i]) end
return 1
