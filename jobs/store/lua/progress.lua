-- Store a running try's progress, only while that try holds the job.
-- KEYS[1] job:<id>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] token, ARGV[4] progress (JSON)
-- Returns 1 when stored, 0 when the try no longer holds the job.
local r = redis.call('HMGET', KEYS[1], 'status', 'token')
if r[1] ~= 'active' or r[2] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[4])
return 1
