-- Store a running try's progress, only while that try holds the job.
-- KEYS[1] job:<id>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] token, ARGV[4] progress (JSON), ARGV[5] id
-- Progress of at most 1 KiB is told to the event stream too.
-- Returns 1 when stored, 0 when the try no longer holds the job.
local r = redis.call('HMGET', KEYS[1], 'status', 'token')
if r[1] ~= 'active' or r[2] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'name', 'pool')
local extra = {}
if #ARGV[4] <= 1024 then extra = {'progress', ARGV[4]} end
emit('progress', ARGV[5], f[1], f[2], 'active', extra)
return 1
