-- The job store: every key, what it holds, and the life cycle of a job.
-- The head of the function library that holds every script (jobs/store/library.py).
-- Each pool has a store of its own: its keys start with the prefix P, the pool's own hash tag
-- ("{mq:<pool>}", KEY_PREFIX and the pool), and a job's keys are in its pool's store. Every
-- script but scheduler.lua runs on one pool's store (ARGV[1] is its P), so each touches one
-- Cluster slot, and pools may live on different nodes. Keys that name <pool> name P's own
-- pool. The keys no pool owns start with G, the service's hash tag ("{mq}"; scheduler.lua
-- runs there with G as its P). One layout for one server and for a Cluster: reads that span
-- pools (by id, the listing, counts, the DLQ, events) ask each pool (jobs/store/__init__.py).
--
-- P:job:<id>         hash    one job: id name pool data maxAttempts timeout backoff priority
--                            score createdAt [requestId traceparent scheduler] | status worker
--                            attempts crashes claims token [held: counted in running:<pool>]
--                            [group] [waitingFor: why a parked job waits] [dedupe: the simple dedupe
--                            key it holds until it finishes] [logged: '1' once it has log lines]
--                            startedAt completedAt failedAt result error traceback progress
--                            tries (JSON: the last MAX_TRIES tries: attempt startedAt endedAt
--                            consumer outcome error; outcome is completed, failed, cancelled,
--                            timed out, crashed or handed back)
-- P:ready:<cid>      zset    jobs assigned to consumer <cid> at enqueue; score = priority score
--                            (creation ms - priority * 2^42: higher priority first, then FIFO)
-- P:active:<cid>     zset    tries <cid> runs; member = job id, score = lease expiry (server ms)
-- P:wake:<cid>       list    wake-ups for <cid>: '1' (claim what you have room for) or
--                            'abort:<id>:<token>' (stop that try); one '1' at most
-- P:delayed:<pool>   zset    jobs of <pool> not bound to a consumer: delays, retry backoffs and
--                            jobs handed back; score = due time (server ms). Any live consumer of
--                            the pool claims them when due.
-- P:workers:<pool>   zset    consumers of <pool>; score = heartbeat expiry (server ms). A draining
--                            consumer stays here until it has handed back all it held.
-- P:draining:<pool>  set     consumers of <pool> that take no new job (enqueue skips them)
-- P:load:<pool>      zset    consumers of <pool> that take new jobs (registered, not draining);
--                            score = how many jobs it holds: queued in ready:<cid> and running
--                            in active:<cid>. Enqueue takes the lowest live one (O(1), not a
--                            read per consumer); every script that moves a job in or out of
--                            those two keeps it (held_moved, queued_moved)
-- P:queued:<pool>    string  jobs in the ready queues of <pool>'s consumers (counted against
--                            its backlog with delayed:<pool> and grouped:<pool>)
-- P:worker:<cid>     hash    info (JSON), instance (the process now in the slot), lastSeen,
--                            gate ('1' while its pool is paused or limited: claim then reads
--                            control:<pool>; a pool without either costs its claims nothing)
-- P:control:<pool>   hash    paused ('1'), limits (JSON: rate {max, period s}, concurrency,
--                            jobs {<name>: {concurrency}}, groups {rate, concurrency}), caps (JSON {<name>: n}, from
--                            @job(max_concurrency)), holdUntil (ms: a job asked to be rate
--                            limited), grouped ('1' once a grouped job came: claims read the
--                            group queues); for every node, kept across restarts
-- P:running:<pool>   hash    tries of a limited pool that count against its limits: all,
--                            n:<name>, g:<group>; a held job gives its count back when it
--                            leaves active
-- P:starts:<pool>    zset    starts in a rate-limited pool's current period; member
--                            <id>:<token>, score = start (server ms)
-- P:parked:<pool>:<name> zset jobs of <name> waiting for its concurrency cap; score = when
--                            parked. One goes back to delayed:<pool> each time one ends.
-- P:group:<pool>:<g> zset   queued jobs of group <g> (options.group) of <pool>, not bound to a
--                            consumer; score = priority score. Any consumer of the pool serves
--                            the groups round-robin, each under its limits (limits.groups)
-- P:groups:<pool>    zset    groups of <pool> with jobs queued; score = turn (lowest next; a
--                            group served goes to the end)
-- P:gstarts:<pool>:<g> zset  starts of group <g> in its rate period; member <id>:<token>
-- P:grouped:<pool>   string  jobs in the group queues of <pool> (counted against its backlog)
-- P:sweep:<pool>     string  the consumer sweeping <pool> for lapsed consumers (short expiry)
-- P:stats            hash    counters: completed failed deadLettered dlqDropped
-- P:dlq              zset    dead-lettered job ids; score = when (server ms)
-- P:index            zset    every stored job; score = createdAt (the listing, newest first)
-- P:index:<status>   zset    the stored jobs in <status>, for the statuses of INDEXED (delayed
--                            failed completed dead cancelled); score = createdAt. Queued and
--                            active, which every job passes through, have none: their listing
--                            walks P:index (4 writes per job fewer)
-- P:expiring         zset    finished jobs (completed, cancelled); score = when the sweep deletes
--                            the record and its index entries (the record's own TTL, an hour
--                            later, is a backstop)
-- P:logs:<id>        list    lines job <id> wrote with ctx.log, JSON {at, text}; capped; lives
--                            and expires with its record
-- P:minute:<pool>:<m> hash   completed failed deadLettered in minute m (server ms // 60000) of
--                            <pool>; expires after the history period
-- P:events           stream  job state changes: type id name pool status at [worker attempt
--                            progress]; about EVENTS_KEPT entries (GET /events)
-- P:dedupe:<pool>:<key> string the job that stands for every enqueue of dedupe key <key>
--                            (options.dedupe); expires after its ttl; a simple one goes when its
--                            job finishes
--
-- G:pools            set     every pool a consumer has served (the pools reads ask)
-- G:node:<name>      string  the master that runs as NODE_NAME <name> (JSON; supervisor/node.py)
-- G:schedulers       hash    job schedulers: id -> definition (JSON: the shape of GET
--                            /schedulers/{id} and job, the job's stored fields)
-- G:schedule         zset    schedulers that run: id, score = next due time (server ms). A due
--                            time makes job <id>@<due> in its pool's store (fire.lua), queued
--                            in delayed:<pool>, then the scheduler moves on (scheduler.lua)
-- G:logins:<client>  string  failed dashboard logins of a client address in this window
--                            (server/auth.py through the store; expires with the window)
--
-- Life cycle (status: where the job is):
--   enqueue    -> queued: ready:<cid> | queued: group:<pool>:<g> (options.group)
--                 | delayed: delayed:<pool>
--   claim      -> active: active:<cid>, with a new token (from delayed:<pool> when due, from
--                 ready:<cid>, or stolen from the most loaded live peer's ready queue); in a
--                 paused or limited pool, nothing or fewer; a job whose name is at its cap
--                 waits in parked:<pool>:<name>
--   finish     -> completed | failed: delayed:<pool> (retry) | dead: dlq | cancelled
--                 | queued: delayed:<pool> (handed back at shutdown)
--   recover    -> queued: delayed:<pool>, due now (a lapsed or dead holder) | dead (crashed or
--                 timed out too often)
--   cancel     -> cancelled (a running try is told to abort and its end is recorded)
--   dlq retry  -> queued: delayed:<pool>, due now, tries reset
--   fire       -> queued: delayed:<pool>, due now (a scheduler's due time came)
--   move_pool  -> (adopt, in the target pool's store) queued or delayed as before: delayed:<to>;
--                 then deleted from the source pool's store
-- Terminal: completed, dead, cancelled. Their record expires after the keep time (a dead one
-- leaves with its DLQ entry). A job that has not finished is in exactly one of the sets above.
--
-- Every status change goes through set_status: it keeps the index of the job's status (if
-- INDEXED has one) and tells P:events.
-- Time is the server's: ARGV[2] is '' (use TIME) or, in tests, explicit milliseconds.
-- Finish, progress and lease renewal take effect only under the try's token (fencing).

-- This file runs once, when the library loads (jobs/store/library.py); each script is a
-- function of it that calls begin() first. Per-call state lives in these locals, which
-- begin() sets: KEYS and ARGV of the call, the prefix P, NOW, the keys named from P, and
-- ENDED (the tries a recovering call ended).
local KEYS, ARGV, P, NOW, STATS, DLQ, INDEX, EXPIRING, EVENTS, ENDED
local function begin(keys, argv)
  KEYS, ARGV = keys, argv
  NOW = tonumber(argv[2])
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  if argv[1] ~= P then  -- the names built from P stay until a call comes for another store
    P = argv[1]
    STATS, DLQ, INDEX = P .. ':stats', P .. ':dlq', P .. ':index'
    EXPIRING, EVENTS = P .. ':expiring', P .. ':events'
  end
  ENDED = {}
end
local PRIORITY_STEP = 4398046511104  -- 2^42

local function job_key(id) return P .. ':job:' .. id end
local function ready_key(cid) return P .. ':ready:' .. cid end
local function active_key(cid) return P .. ':active:' .. cid end
local function wake_key(cid) return P .. ':wake:' .. cid end
local function info_key(cid) return P .. ':worker:' .. cid end
local function delayed_key(pool) return P .. ':delayed:' .. pool end
local function workers_key(pool) return P .. ':workers:' .. pool end
local function draining_key(pool) return P .. ':draining:' .. pool end
local function logs_key(id) return P .. ':logs:' .. id end
local function status_index(status) return P .. ':index:' .. status end
local function minute_key(pool, minute) return P .. ':minute:' .. pool .. ':' .. minute end
local function control_key(pool) return P .. ':control:' .. pool end
local function running_key(pool) return P .. ':running:' .. pool end
local function starts_key(pool) return P .. ':starts:' .. pool end
local function parked_key(pool, name) return P .. ':parked:' .. pool .. ':' .. name end
local function groups_key(pool) return P .. ':groups:' .. pool end
local function group_key(pool, group) return P .. ':group:' .. pool .. ':' .. group end
local function gstarts_key(pool, group) return P .. ':gstarts:' .. pool .. ':' .. group end
local function grouped_key(pool) return P .. ':grouped:' .. pool end
local function load_key(pool) return P .. ':load:' .. pool end
local function queued_key(pool) return P .. ':queued:' .. pool end
-- the statuses with an index of their own (jobs/store/types.py INDEXED says the same)
local INDEXED = {delayed = true, failed = true, completed = true, dead = true, cancelled = true}
-- every status: versions before INDEXED kept an index for each
local STATUSES = {'queued', 'delayed', 'active', 'failed', 'completed', 'dead', 'cancelled'}
local EVENTS_KEPT = 10000
local MAX_TRIES = 25
local BACKSTOP_MS = 3600000  -- a finished record's TTL beyond its keep time

-- Tell the event stream; `extra` is a flat list of more field, value pairs.
local function emit(event, id, name, pool, status, extra)
  if not extra then  -- most events: no table to build
    redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENTS_KEPT, '*', 'type', event, 'id', id,
      'name', name or '', 'pool', pool or '', 'status', status, 'at', NOW)
    return
  end
  local fields = {'type', event, 'id', id, 'name', name or '', 'pool', pool or '',
    'status', status, 'at', NOW}
  for _, v in ipairs(extra) do fields[#fields + 1] = v end
  redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENTS_KEPT, '*', unpack(fields))
end

-- Change a job's status: move it between the status indexes and tell the event stream.
-- `event` names the change when it is not the status itself (started, enqueued); `fields`
-- (a flat list of field, value pairs) go into the record in the same write as the status.
-- `known` is the record's STATUS_FIELDS when the caller read them already.
local release  -- below: a held try gives back its counts
local STATUS_FIELDS = {'status', 'createdAt', 'name', 'pool', 'held', 'dedupe'}
-- The names of several lists of fields in one list: a script reads a record once for helpers
-- that each take their fields as `known`. (It runs as the library loads, where only the
-- language itself is there: no ipairs.)
local function concat(lists)
  local out = {}
  for i = 1, #lists do
    for j = 1, #lists[i] do out[#out + 1] = lists[i][j] end
  end
  return out
end
-- what claim.lua reads of a record it starts: STATUS_FIELDS (1-6), then the rest
local CLAIMED_FIELDS = concat({STATUS_FIELDS, {'data', 'maxAttempts', 'timeout', 'backoff',
  'requestId', 'traceparent', 'group', 'claims', 'attempts'}})
local function set_status(id, status, event, extra, fields, known)
  local key = job_key(id)
  local r = known or redis.call('HMGET', key, unpack(STATUS_FIELDS))
  if r[1] == status then
    if fields then redis.call('HSET', key, unpack(fields)) end
    return
  end
  if r[5] then release(id, r[3] or '', r[4] or '') end
  if r[6] and (status == 'completed' or status == 'dead' or status == 'cancelled') and
      redis.call('GET', r[6]) == id then
    redis.call('DEL', r[6])  -- the simple dedupe key this job held: a new one may come
  end
  if INDEXED[r[1]] then redis.call('ZREM', status_index(r[1]), id) end
  if INDEXED[status] then redis.call('ZADD', status_index(status), r[2] or NOW, id) end
  if fields then
    redis.call('HSET', key, 'status', status, unpack(fields))
  else
    redis.call('HSET', key, 'status', status)
  end
  emit(event or status, id, r[3], r[4], status, extra)
end

-- A new record: into the listing and its status index, if its status has one.
local function indexed(id, status, created)
  created = created or NOW
  redis.call('ZADD', INDEX, created, id)
  if INDEXED[status] then redis.call('ZADD', status_index(status), created, id) end
end

-- Delete a record, its log lines and its index entries. `status` is the record's status
-- when the caller read it (a record is in its own status's index only); else every index
-- any version kept.
local function delete_job(id, status)
  redis.call('DEL', job_key(id), logs_key(id))
  redis.call('ZREM', INDEX, id)
  redis.call('ZREM', EXPIRING, id)
  if status then
    if INDEXED[status] then redis.call('ZREM', status_index(status), id) end
    return
  end
  for _, s in ipairs(STATUSES) do redis.call('ZREM', status_index(s), id) end
end

-- Count a finished try in the totals and in its pool's minute of history.
local function count(pool, field, history_ms)
  redis.call('HINCRBY', STATS, field, 1)
  local key = minute_key(pool or '', math.floor(NOW / 60000))
  if redis.call('HINCRBY', key, field, 1) == 1 then redis.call('PEXPIRE', key, history_ms) end
end

-- Append how a try ended to the job's tries (the last MAX_TRIES); with `into` (a flat list of
-- fields), add the field to it for the caller's write instead of writing it here. `known` is
-- the record's TRY_FIELDS when the caller read them already.
local TRY_FIELDS = {'tries', 'attempts', 'startedAt', 'worker'}
-- what finish.lua reads of a record it ends: STATUS_FIELDS (1-6), the token (7), TRY_FIELDS
-- (8-11), logged (12: '1' once a try wrote a log line, log.lua)
local FINISHED_FIELDS = concat({STATUS_FIELDS, {'token'}, TRY_FIELDS, {'logged'}})
local LOGGED = #FINISHED_FIELDS  -- where 'logged' is in a record read with FINISHED_FIELDS
local function record_try(id, outcome, err, into, known)
  local key = job_key(id)
  local r = known or redis.call('HMGET', key, unpack(TRY_FIELDS))
  local ok, tries = true, {}
  if r[1] then ok, tries = pcall(cjson.decode, r[1]) end  -- a first try has none to read
  if not ok or type(tries) ~= 'table' then tries = {} end
  tries[#tries + 1] = {attempt = tonumber(r[2]) or 0, startedAt = tonumber(r[3]) or NOW,
    endedAt = NOW, consumer = r[4] or '', outcome = outcome, error = err or ''}
  while #tries > MAX_TRIES do table.remove(tries, 1) end
  if into then
    into[#into + 1], into[#into + 2] = 'tries', cjson.encode(tries)
  else
    redis.call('HSET', key, 'tries', cjson.encode(tries))
  end
end

-- One token is enough to wake a consumer: it claims everything it has room for.
local function wake(cid)
  local key = wake_key(cid)
  if redis.call('LLEN', key) == 0 then redis.call('RPUSH', key, '1') end
end

-- Consumer cid holds n more jobs (n < 0: fewer) in ready:<cid> and active:<cid>.
local function held_moved(cid, pool, n)
  if n ~= 0 then redis.call('ZADD', load_key(pool), 'XX', 'INCR', n, cid) end
end
-- n more jobs (n < 0: fewer) wait in the ready queues of the pool's consumers.
local function queued_moved(pool, n)
  if n ~= 0 then redis.call('INCRBY', queued_key(pool), n) end
end
-- n jobs joined consumer cid's ready queue (n < 0: left it).
local function ready_moved(cid, pool, n)
  held_moved(cid, pool, n)
  queued_moved(pool, n)
end

-- The least-loaded live consumer of a pool that takes new jobs, or nil. A lapsed one stays in
-- load:<pool> until the sweep hands its jobs back: it is passed over.
local function least_loaded(pool)
  local load, workers = load_key(pool), workers_key(pool)
  local from = 0
  while true do
    local page = redis.call('ZRANGE', load, from, from + 15)
    if #page == 0 then return nil end
    for _, cid in ipairs(page) do
      if (tonumber(redis.call('ZSCORE', workers, cid)) or -1) >= NOW then return cid end
    end
    from = from + 16
  end
end

-- Live consumers of a pool that take new jobs.
local function accepting(pool)
  local live = redis.call('ZRANGEBYSCORE', workers_key(pool), NOW, '+inf')
  -- one read of the draining set, not one per consumer (enqueue runs this for every job)
  local draining = redis.call('SMEMBERS', draining_key(pool))
  if #draining == 0 then return live end
  local skip, out = {}, {}
  for _, cid in ipairs(draining) do skip[cid] = true end
  for _, cid in ipairs(live) do
    if not skip[cid] then out[#out + 1] = cid end
  end
  return out
end

local function wake_pool(pool)
  for _, cid in ipairs(accepting(pool)) do wake(cid) end
end

-- A held try (of a limited pool) leaves active: give back its counts, let one job parked for
-- its name's cap go back to the pool, and wake the pool (there is room again).
release = function(id, name, pool)
  local running = running_key(pool)
  redis.call('HINCRBY', running, 'all', -1)
  redis.call('HINCRBY', running, 'n:' .. name, -1)
  local group = redis.call('HGET', job_key(id), 'group')
  if group then redis.call('HINCRBY', running, 'g:' .. group, -1) end
  redis.call('HDEL', job_key(id), 'held')
  local back = redis.call('ZPOPMIN', parked_key(pool, name))
  if back[1] then
    redis.call('HDEL', job_key(back[1]), 'waitingFor')
    redis.call('ZADD', delayed_key(pool), NOW, back[1])
  end
  wake_pool(pool)
end

-- Whether claims of `pool` must read control:<pool> (paused, limited or held), told to each
-- of its consumers' worker:<cid> (the hash a claim reads anyway).
local function gated(pool)
  local c = redis.call('HMGET', control_key(pool), 'paused', 'limits', 'caps', 'holdUntil',
    'grouped')
  return c[1] or c[2] or c[3] or c[5] or (tonumber(c[4] or 0) > NOW)
end

local function set_gates(pool)
  local gate = gated(pool)
  for _, cid in ipairs(redis.call('ZRANGE', workers_key(pool), 0, -1)) do
    if not gate then redis.call('HDEL', info_key(cid), 'gate')
    elseif redis.call('EXISTS', info_key(cid)) == 1 then
      redis.call('HSET', info_key(cid), 'gate', '1')
    end
  end
end

-- A job of a group waits in its group's queue, which any consumer of the pool serves in turn
-- with the other groups (claim.lua). A group new to the turn comes after those in it. The
-- first grouped job of a pool gates its claims for good (a retry of a grouped job, due in
-- delayed:<pool>, must go back through its group).
local function group_queue(id, pool, group, score)
  redis.call('ZADD', group_key(pool, group), score, id)
  redis.call('INCR', grouped_key(pool))
  local turns = groups_key(pool)
  if not redis.call('ZSCORE', turns, group) then
    local last = redis.call('ZRANGE', turns, -1, -1, 'WITHSCORES')
    redis.call('ZADD', turns, (tonumber(last[2]) or 0) + 1, group)
  end
  if redis.call('HSETNX', control_key(pool), 'grouped', '1') == 1 then set_gates(pool) end
end

-- A job leaves its group's queue (claimed or cancelled).
local function group_unqueue(id, pool, group)
  if redis.call('ZREM', group_key(pool, group), id) == 1 then
    redis.call('DECR', grouped_key(pool))
    return true
  end
  return false
end

-- A job reached a terminal status that keeps its record for `keep` ms (completed, cancelled);
-- `fields` are written with it, and `drop` (a field name) deleted with its token. `known` is
-- the record's FINISHED_FIELDS when the caller read them already.
local function finished(id, status, keep, fields, drop, known)
  local key = job_key(id)
  fields = fields or {}
  fields[#fields + 1], fields[#fields + 2] = 'completedAt', NOW
  set_status(id, status, nil, nil, fields, known)
  if drop then redis.call('HDEL', key, 'token', drop) else redis.call('HDEL', key, 'token') end
  redis.call('PEXPIRE', key, keep + BACKSTOP_MS)
  if not known or known[LOGGED] then redis.call('PEXPIRE', logs_key(id), keep + BACKSTOP_MS) end
  redis.call('ZADD', EXPIRING, NOW + keep, id)
end

local function dead_letter(id, err, tb, o)
  local key = job_key(id)
  set_status(id, 'dead')
  redis.call('HSET', key, 'error', err, 'traceback', tb, 'completedAt', NOW, 'failedAt', NOW)
  redis.call('HDEL', key, 'token')
  redis.call('PERSIST', key)
  redis.call('PERSIST', logs_key(id))
  redis.call('ZREM', EXPIRING, id)
  count(redis.call('HGET', key, 'pool'), 'deadLettered', o.history)
  redis.call('ZADD', DLQ, NOW, id)
  local over = redis.call('ZCARD', DLQ) - o.dlq_max
  if over > 0 then
    local popped = redis.call('ZPOPMIN', DLQ, over)  -- id, score, id, score...
    for i = 1, #popped, 2 do
      if redis.call('HGET', job_key(popped[i]), 'status') == 'dead' then
        delete_job(popped[i], 'dead')
      end
    end
    redis.call('HINCRBY', STATS, 'dlqDropped', math.floor(over))
  end
end

-- Delete up to `batch` finished records whose keep time is over. Returns how many.
local function prune(batch)
  local due = redis.call('ZRANGEBYSCORE', EXPIRING, '-inf', NOW, 'LIMIT', 0, batch)
  for _, id in ipairs(due) do
    local status = redis.call('HGET', job_key(id), 'status')
    if not status or status == 'completed' or status == 'cancelled' then
      delete_job(id, status)
    else
      redis.call('ZREM', EXPIRING, id)
    end
  end
  return #due
end

-- The backoff before the next try, in ms, from the job's stored policy.
local function backoff_ms(key, attempts, cap_ms)
  local raw = redis.call('HGET', key, 'backoff')
  local ok, policy = pcall(cjson.decode, raw or '{}')
  if not ok or type(policy) ~= 'table' then policy = {} end
  local delay = (tonumber(policy['delay']) or 0) * 1000
  if policy['type'] ~= 'fixed' then delay = delay * 2 ^ math.max(attempts - 1, 0) end
  return math.min(delay, cap_ms)
end

-- A failed try: retry after its backoff, or dead-letter when it was the last.
local function failed_try(id, err, tb, delay_ms, o)
  local key = job_key(id)
  local r = redis.call('HMGET', key, 'attempts', 'maxAttempts', 'pool')
  count(r[3], 'failed', o.history)
  if tonumber(r[1] or 0) >= tonumber(r[2] or 1) then
    dead_letter(id, err, tb, o)
    return 'dead'
  end
  if delay_ms == nil then delay_ms = backoff_ms(key, tonumber(r[1] or 1), o.max_backoff) end
  set_status(id, 'failed', nil, {'attempt', r[1] or '0'})
  redis.call('HSET', key, 'error', err)
  redis.call('HDEL', key, 'token')
  redis.call('ZADD', delayed_key(r[3]), NOW + delay_ms, id)
  return 'failed'
end

-- The tries a recovering script ended, as name, outcome pairs (flat): outcome is failed or dead
-- (a timed-out try, retried or not) or crashed (dead-lettered after too many crashes). The
-- script returns them so that the caller counts them in its metrics (ENDED, set in begin).

-- Take back a try whose holder is gone (dead, lapsed or replaced). A try that had passed its
-- own time-out is a timed-out try; otherwise the holder's death counts as a crash of the job,
-- not as a try, and too many crashes dead-letter it. Returns true when the job went back to
-- its pool.
local function orphan(id, pool, o)
  local key = job_key(id)
  local r = redis.call('HMGET', key, 'status', 'startedAt', 'timeout', 'name')
  local status = r[1]
  if not status then return false end
  if status == 'cancelled' then
    record_try(id, 'cancelled', '')
    finished(id, 'cancelled', o.keep)
    return false
  end
  if status ~= 'active' then return false end  -- a stale entry: the job lives elsewhere
  local limit = tonumber(r[2] or NOW) + (tonumber(r[3]) or 0) * 1000
  if limit < NOW then
    local message = string.format('timed out after %g s', tonumber(r[3]) or 0)
    record_try(id, 'timed out', message)
    local outcome = failed_try(id, message, '', nil, o)
    ENDED[#ENDED + 1], ENDED[#ENDED + 2] = r[4] or '', outcome
    return outcome == 'failed'
  end
  record_try(id, 'crashed', 'its process died')
  redis.call('HINCRBY', key, 'attempts', -1)
  local crashes = redis.call('HINCRBY', key, 'crashes', 1)
  if crashes >= o.max_crashes then
    dead_letter(id, 'process died while running this job ' .. crashes .. ' times', '', o)
    ENDED[#ENDED + 1], ENDED[#ENDED + 2] = r[4] or '', 'crashed'
    return false
  end
  set_status(id, 'queued')
  redis.call('HDEL', key, 'token', 'worker')
  redis.call('ZADD', delayed_key(pool), NOW, id)
  return true
end

-- A job waiting in a consumer's queue goes back to its pool, due now.
local function unassign(id, pool)
  local key = job_key(id)
  if redis.call('HGET', key, 'status') ~= 'queued' then return false end
  redis.call('HDEL', key, 'worker')
  redis.call('ZADD', delayed_key(pool), NOW, id)
  return true
end

-- Hand back up to `batch` jobs of consumer `cid` (its running tries, then its queue). When
-- nothing is left the consumer is unregistered. Returns moved, done.
local function hand_back(cid, pool, batch, o)
  local moved, ran, waited = 0, 0, 0
  for _, id in ipairs(redis.call('ZRANGE', active_key(cid), 0, batch - 1)) do
    redis.call('ZREM', active_key(cid), id)
    ran = ran + 1
    if orphan(id, pool, o) then moved = moved + 1 end
    batch = batch - 1
  end
  if batch > 0 then
    for _, id in ipairs(redis.call('ZRANGE', ready_key(cid), 0, batch - 1)) do
      redis.call('ZREM', ready_key(cid), id)
      waited = waited + 1
      if unassign(id, pool) then moved = moved + 1 end
    end
  end
  held_moved(cid, pool, -ran - waited)
  queued_moved(pool, -waited)
  local done = redis.call('ZCARD', active_key(cid)) + redis.call('ZCARD', ready_key(cid)) == 0
  if done then
    redis.call('ZREM', workers_key(pool), cid)
    redis.call('ZREM', load_key(pool), cid)
    redis.call('SREM', draining_key(pool), cid)
    redis.call('DEL', info_key(cid), wake_key(cid))
  end
  return moved, done
end

-- The options every recovering script reads from ARGV[3..9], in this order.
local function recover_options()
  return {
    max_crashes = tonumber(ARGV[3]), dlq_max = tonumber(ARGV[4]), keep = tonumber(ARGV[5]),
    max_backoff = tonumber(ARGV[6]), batch = tonumber(ARGV[7]), pool = ARGV[8],
    history = tonumber(ARGV[9]),
  }
end
