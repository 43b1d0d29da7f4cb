-- A page of the job listing, newest first: walk one index down from a cursor, keep the jobs
-- that match the filters, and stop at `limit` matches or after examining `budget` entries (or
-- reading `bytes` of data for `q`), so that one call costs little however many jobs are stored.
-- KEYS[1] the index walked: index:<status> for a status that has one (INDEXED), else index
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] cursor score ('' from the newest), ARGV[4] cursor id,
-- ARGV[5] limit, ARGV[6] budget, ARGV[7] status, ARGV[8] pool, ARGV[9] name ('' for any),
-- ARGV[10] q in lower case ('' for any; found in the id, the error or the data),
-- ARGV[11] bytes of data read at most
-- Returns {rows, cursor score, cursor id}: each row holds the fields of LISTED in order; the
-- cursor is '' when the index has no more entries.
local LISTED = {'id', 'name', 'status', 'pool', 'worker', 'attempts', 'maxAttempts', 'priority',
  'progress', 'error', 'createdAt', 'startedAt', 'completedAt'}
local status, pool, name, q = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local limit, budget, bytes = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[11])
local top, after = '+inf', ARGV[4]
if ARGV[3] ~= '' then top = ARGV[3] end
local top_n = tonumber(ARGV[3])

local function found(text) return text and string.find(string.lower(text), q, 1, true) ~= nil end

local function matches(f, key)
  if status ~= '' and f[3] ~= status then return false end
  if pool ~= '' and f[4] ~= pool then return false end
  if name ~= '' and f[2] ~= name then return false end
  if q == '' or found(f[1]) or found(f[10]) then return true end
  local data = redis.call('HGET', key, 'data') or ''
  bytes = bytes - #data
  return found(data)
end

local rows, examined, offset = {}, 0, 0
local last_score, last_id = '', ''
while true do
  local chunk = redis.call('ZREVRANGEBYSCORE', KEYS[1], top, '-inf', 'WITHSCORES', 'LIMIT',
    offset, 100)
  if #chunk == 0 then return {rows, '', ''} end
  for i = 1, #chunk, 2 do
    local id, score = chunk[i], chunk[i + 1]
    offset = offset + 1
    -- entries of the cursor's own score at or above its id were on earlier pages
    if not (after ~= '' and tonumber(score) == top_n and id >= after) then
      examined = examined + 1
      local key = job_key(id)
      local f = redis.call('HMGET', key, unpack(LISTED))
      if not f[3] then
        -- a record that left without its index entry (its TTL backstop): drop the entry
        redis.call('ZREM', KEYS[1], id)
        offset = offset - 1
      elseif matches(f, key) then
        rows[#rows + 1] = f
      end
      last_score, last_id = score, id
      if #rows >= limit or examined >= budget or bytes <= 0 then
        return {rows, last_score, last_id}
      end
    end
  end
end
