-- Delete a dead-lettered job and its record, in one step.
-- KEYS[1] job:<id>, KEYS[2] dlq
-- ARGV[1] prefix, ARGV[2] now, ARGV[3] id
-- Returns the record as a flat field/value list, or an empty list when it was not in the DLQ.
local id = ARGV[3]
if redis.call('ZREM', KEYS[2], id) == 0 then return {} end
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return {} end
local record = redis.call('HGETALL', KEYS[1])
delete_job(id, 'dead')
return record
