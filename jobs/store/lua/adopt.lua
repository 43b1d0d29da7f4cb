-- Move the jobs of a pool that is no longer served: the target's half (see move_pool.lua).
-- Each job is written here once, under this pool, due when it was due there.
-- KEYS[1] delayed:<to>
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] to pool, ARGV[4] jobs (JSON [[id, due ms, {field:
-- value}], ...])
-- Returns how many were new here.
local pool, made = ARGV[3], 0
for _, job in ipairs(cjson.decode(ARGV[4])) do
  local id, due, record = job[1], job[2], job[3]
  if redis.call('EXISTS', job_key(id)) == 0 then
    local fields = {}
    for field, value in pairs(record) do
      if field ~= 'worker' then
        fields[#fields + 1], fields[#fields + 2] = field, value
      end
    end
    redis.call('HSET', job_key(id), unpack(fields))
    redis.call('HSET', job_key(id), 'pool', pool)
    indexed(id, record.status or 'queued', tonumber(record.createdAt) or NOW)
    redis.call('ZADD', KEYS[1], due, id)
    made = made + 1
  end
end
if made > 0 then wake_pool(pool) end
return made
