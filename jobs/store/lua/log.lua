-- Append a line a running try wrote with ctx.log, only while that try holds the job.
-- KEYS[1] job:<id>, KEYS[2] logs:<id>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] token, ARGV[4] text (shortened by the caller),
-- ARGV[5] most lines kept
-- Returns 1 when stored, 0 when the try no longer holds the job.
local r = redis.call('HMGET', KEYS[1], 'status', 'token', 'logged')
if r[1] ~= 'active' or r[2] ~= ARGV[3] then return 0 end
if not r[3] then redis.call('HSET', KEYS[1], 'logged', '1') end  -- finish expires the lines then
redis.call('RPUSH', KEYS[2], cjson.encode({at = NOW, text = ARGV[4]}))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
return 1
