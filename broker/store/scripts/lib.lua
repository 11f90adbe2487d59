-- lib: helpers prepended to every script below (see Script in store/base.py).

-- The payload with `enqueued_at` set to `text` as its first field. A stored payload keeps
-- `enqueued_at` first whenever it has one (broker/jobs.py orders Job's fields so), so the old
-- value, if any, is the prefix replaced here; no JSON is decoded.
local function stamp(payload, text)
  local rest = string.match(payload, '^{"enqueued_at":"[^"]*",(.*)$') or string.sub(payload, 2)
  return '{"enqueued_at":"' .. text .. '",' .. rest
end

-- Make `queue`'s entry in the due index `due` exact for the sorted set `set`: the score of its
-- earliest entry, or no entry once the set is empty.
local function refresh_due(due, set, queue)
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', due, first[2], queue)
  else
    redis.call('ZREM', due, queue)
  end
end

-- Drop the jid index entry of a job of `queue` that has left the broker.
local function forget(jids, jid, queue)
  if redis.call('HGET', jids, jid) == queue then redis.call('HDEL', jids, jid) end
end

-- The entries a script acts on, from ARGV[first] on: 'due' <now> <limit> selects those of
-- `set` whose score is <= now; 'all' <limit> the first ones of `set`; 'jids' <jid> <score> ... the
-- given jids, each only while its score in `set` is still the one the caller read (so a caller
-- never acts on an entry that moved and came back). Returns the jids that are in `set` now.
local function pick(set, first)
  local mode = ARGV[first]
  if mode == 'due' then
    return redis.call('ZRANGEBYSCORE', set, '-inf', ARGV[first + 1], 'LIMIT', 0, ARGV[first + 2])
  elseif mode == 'all' then
    return redis.call('ZRANGE', set, 0, tonumber(ARGV[first + 1]) - 1)
  end
  local jids = {}
  for i = first + 1, #ARGV, 2 do jids[#jids + 1] = ARGV[i] end
  if #jids == 0 then return jids end
  local scores = redis.call('ZMSCORE', set, unpack(jids))
  local chosen, seen = {}, {}
  for i, jid in ipairs(jids) do
    local read = ARGV[first + 2 * i]
    if scores[i] and tonumber(scores[i]) == tonumber(read) and not seen[jid] then
      seen[jid] = true
      chosen[#chosen + 1] = jid
    end
  end
  return chosen
end

-- Drop the jid index entries of `jids` that still say `value` (the queue for live jobs, or
-- ~queue for finished ones).
local function forget_all(index, jids, value)
  if #jids == 0 then return end
  local owners = redis.call('HMGET', index, unpack(jids))
  local ours = {}
  for i, jid in ipairs(jids) do
    if owners[i] == value then ours[#ours + 1] = jid end
  end
  if #ours > 0 then redis.call('HDEL', index, unpack(ours)) end
end

-- Jobs of `queue` finish now, at `at` (unix seconds): their records stay where they are, the
-- finished set holds them (scored by `at`, purged finished_ttl later), and their index entries
-- say ~queue; `notes` (flat {jid, note, ...}) are kept in the final hash for those that have a
-- state other than done, or a result. With `most` <= 0 nothing is kept: records, progress and
-- index entries go now. Beyond `most` per queue the oldest finished jobs go. KEYS of the
-- caller, in a table: jobs, final, finished, due (of finished), index, progress.
local function finish(k, queue, jids, notes, at, most)
  if #jids == 0 then return end
  most = tonumber(most)
  if most <= 0 then
    redis.call('HDEL', k.jobs, unpack(jids))
    redis.call('HDEL', k.progress, unpack(jids))
    forget_all(k.index, jids, queue)
    return
  end
  local scored, marks = {}, {}
  for _, jid in ipairs(jids) do  -- live jobs of this queue: their index entries name it
    scored[#scored + 1] = at
    scored[#scored + 1] = jid
    marks[#marks + 1] = jid
    marks[#marks + 1] = '~' .. queue
  end
  redis.call('ZADD', k.finished, unpack(scored))
  if #notes > 0 then redis.call('HSET', k.final, unpack(notes)) end
  redis.call('HSET', k.index, unpack(marks))
  redis.call('ZADD', k.due, 'LT', at, queue)
  local over = redis.call('ZCARD', k.finished) - most
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', k.finished, over)
    local gone = {}
    for i = 1, #oldest, 2 do gone[#gone + 1] = oldest[i] end
    redis.call('HDEL', k.jobs, unpack(gone))
    redis.call('HDEL', k.final, unpack(gone))
    redis.call('HDEL', k.progress, unpack(gone))
    forget_all(k.index, gone, '~' .. queue)
  end
end

-- Tell JOB WAITs (on any broker) that these jobs finished or died: publish the awaited ones.
local function announce(awaited, channel, jids)
  if #jids == 0 then return end
  local waited = redis.call('ZMSCORE', awaited, unpack(jids))
  local told = {}
  for i, jid in ipairs(jids) do
    if waited[i] then
      redis.call('PUBLISH', channel, jid)
      told[#told + 1] = jid
    end
  end
  if #told > 0 then redis.call('ZREM', awaited, unpack(told)) end
end

-- The note kept for a finished job: its state if not done, its result (raw JSON) if any; ''
-- when there is nothing to note.
local function note(state, result)
  if state == 'done' and result == '' then return '' end
  local text = '{"state":"' .. state .. '"'
  if result ~= '' then text = text .. ',"result":' .. result end
  return text .. '}'
end

-- Events, for EVENTS subscribers on any broker: published on `hopper:events` (keys.py:
-- EVENTS_CHANNEL) as lines of JSON, one PUBLISH per script call, and only while a broker
-- listens, so that nothing is built when nobody does.
local EVENTS = 'hopper:events'

local function listening()
  return redis.call('PUBSUB', 'NUMSUB', EVENTS)[2] > 0
end

-- Redis's clock, for the time of events.
local function clock()
  local now = redis.call('TIME')
  return now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
end

-- A payload's jobtype: the first "jobtype" key is the job's own (scalar fields come before
-- custom and args, see broker/jobs.py); one with escapes is decoded.
local function jobtype_of(payload)
  if not payload then return '' end
  local _, e = string.find(payload, '"jobtype":"', 1, true)
  if not e then return '' end
  local found = string.match(payload, '^([^"\\]*)"', e + 1)
  if found then return found end
  local ok, job = pcall(cjson.decode, payload)
  if ok and type(job) == 'table' and type(job.jobtype) == 'string' then return job.jobtype end
  return ''
end

-- One event line; `extra` holds more members as raw JSON (',"k":v') or ''.
local function event(name, jid, queue, payload, at, extra)
  return '{"event":"' .. name .. '","jid":' .. cjson.encode(jid) .. ',"queue":"' .. queue
    .. '","jobtype":' .. cjson.encode(jobtype_of(payload)) .. ',"at":' .. at .. extra .. '}'
end

local function publish(events)
  if #events > 0 then redis.call('PUBLISH', EVENTS, table.concat(events, '\n')) end
end

-- Priorities: a waiting job of priority 5 (the default) is in the queue list; one of another
-- priority (1-9, higher first) is in the queue's prioritized zset, scored so that ZPOPMIN
-- gives the highest priority first and, within it, the first to arrive.
local PRIORITY_STEP = 1099511627776  -- 2^40 arrivals per priority
local HIGH = 5 * PRIORITY_STEP  -- scores below this are priorities 6-9

-- A stored payload's priority (nil: the default) and group (nil: none). They follow
-- `enqueued_at` and `reserve_for` in the payload (see broker/jobs.py), so only its first bytes
-- are read; a group holds no quote, backslash or control character (broker/policy.py).
local function head_of(payload)
  local _, e = string.find(payload, '^{"enqueued_at":"[^"]*",')
  local pos = (e or 1) + 1
  local _, r = string.find(payload, '^"reserve_for":%-?%d+,', pos)
  if r then pos = r + 1 end
  local priority = tonumber(string.match(payload, '^"priority":(%d),', pos))
  if priority then pos = pos + 13 end
  return priority, string.match(payload, '^"group":"([^"]*)"', pos)
end

-- Lanes: a waiting job of a group (per tenant, per customer) waits in its group's lane, and a
-- job held back by its jobtype's limits in its jobtype's lane, not in the list. A lane is a
-- zset of jids scored like prioritized; `lanes` lists those that may be served now, scored by
-- their turn (round-robin: a served lane goes to the back), `resting` those held back by their
-- limits, scored by when to look again. `running` counts the reservations of each lane that
-- has a concurrency limit, `leases` says which lanes a reserved job counts towards (JSON),
-- `buckets` holds each rate-limited lane's tokens until they are full again (`refills`: when).
-- Lane ids: 'g:<group>', 't:<jobtype>'.
-- Their keys share the queue's hash tag and are named from its meta key (keys.py).
local function lanes_of(meta)
  local base = string.sub(meta, 1, -5)
  return {meta = meta, lane = base .. 'lane:', ring = base .. 'lanes', resting = base .. 'resting',
    running = base .. 'running', leases = base .. 'leases', buckets = base .. 'buckets',
    refills = base .. 'refills'}
end

-- A job joins `lane` (l from lanes_of) with `score`; a lane that does not rest takes its turn
-- (a new one at the back).
local function enter_lane(l, lane, score, jid)
  redis.call('ZADD', l.lane .. lane, score, jid)
  if not redis.call('ZSCORE', l.resting, lane) and not redis.call('ZSCORE', l.ring, lane) then
    redis.call('ZADD', l.ring, redis.call('HINCRBY', l.meta, 'turn', 1), lane)
  end
  redis.call('HSET', l.meta, 'lanes', 1)
  redis.call('HINCRBY', l.meta, 'laned', 1)
end

-- A job leaves `lane`; a lane left empty leaves the ring (or rest). 1 if it was there.
local function exit_lane(l, lane, jid)
  local key = l.lane .. lane
  if redis.call('ZREM', key, jid) == 0 then return 0 end
  redis.call('HINCRBY', l.meta, 'laned', -1)
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', l.ring, lane)
    redis.call('ZREM', l.resting, lane)
  end
  return 1
end

-- Reservations that end (jids of one queue) give back their lanes' slots; a lane resting at
-- its limits takes its turn again (FETCH looks at it anew).
local function unlease(meta, jids)
  if #jids == 0 then return end
  local l = lanes_of(meta)
  local held = redis.call('HMGET', l.leases, unpack(jids))
  local gone = {}
  for i, value in ipairs(held) do
    if value then
      gone[#gone + 1] = jids[i]
      for _, lane in ipairs(cjson.decode(value)) do
        if redis.call('HINCRBY', l.running, lane, -1) <= 0 then redis.call('HDEL', l.running, lane) end
        if redis.call('ZREM', l.resting, lane) == 1 then
          redis.call('ZADD', l.ring, redis.call('HINCRBY', meta, 'turn', 1), lane)
        end
      end
    end
  end
  if #gone > 0 then redis.call('HDEL', l.leases, unpack(gone)) end
end

-- Take up to `most` waiting jobs out of the lanes of the queue whose meta hash is `meta`
-- (QUEUE REMOVE, FLUSH): their jids.
local function empty_lanes(meta, most)
  local l = lanes_of(meta)
  local jids = {}
  for _, set in ipairs({l.ring, l.resting}) do
    while #jids < most do
      local lane = redis.call('ZRANGE', set, 0, 0)[1]
      if not lane then break end
      local popped = redis.call('ZPOPMIN', l.lane .. lane, most - #jids)
      for i = 1, #popped, 2 do jids[#jids + 1] = popped[i] end
      if redis.call('EXISTS', l.lane .. lane) == 0 then redis.call('ZREM', set, lane) end
    end
  end
  if #jids > 0 then redis.call('HINCRBY', meta, 'laned', -#jids) end
  return jids
end

-- Put waiting jobs in line (jids, with their payloads): the default ones pushed on `list`
-- (LPUSH: FIFO with RPOP), those of a group in its lane, the others into `ranked` after those
-- of their priority (`meta` counts arrivals and notes that the zset may hold jobs). Returns
-- true when the queue must be listed and its FETCHes woken: the list was empty, or other jobs
-- came.
local function line_up(list, ranked, meta, jids, payloads)
  local plain, scored, grouped = {}, {}, {}
  for i, jid in ipairs(jids) do
    local priority, group = head_of(payloads[i])
    if group then
      grouped[#grouped + 1] = {jid, priority or 5, 'g:' .. group}
    elseif priority then
      scored[#scored + 1] = priority
      scored[#scored + 1] = jid
    else
      plain[#plain + 1] = jid
    end
  end
  local notify = false
  if #plain > 0 then notify = redis.call('LPUSH', list, unpack(plain)) == #plain end
  local count = #scored / 2 + #grouped
  if count > 0 then
    local arrival = redis.call('HINCRBY', meta, 'arrivals', count) - count
    for i = 1, #scored, 2 do
      arrival = arrival + 1
      scored[i] = (10 - scored[i]) * PRIORITY_STEP + arrival
    end
    if #scored > 0 then
      redis.call('ZADD', ranked, unpack(scored))
      redis.call('HSET', meta, 'prioritized', 1)
    end
    local l = #grouped > 0 and lanes_of(meta)
    for _, entry in ipairs(grouped) do
      arrival = arrival + 1
      enter_lane(l, entry[3], (10 - entry[2]) * PRIORITY_STEP + arrival, entry[1])
    end
    notify = true
  end
  return notify
end

-- The lanes a waiting job (its payload) may wait in: its group's, then its jobtype's.
local function lane_ids(payload)
  local _, group = head_of(payload)
  local ids = {'t:' .. jobtype_of(payload)}
  if group then table.insert(ids, 1, 'g:' .. group) end
  return ids
end

-- Take a waiting job out of line, wherever it waits (its payload names its lane); 1 if it was
-- waiting.
local function leave_line(list, ranked, meta, jid, payload)
  if redis.call('ZREM', ranked, jid) == 1 then return 1 end
  if redis.call('LREM', list, -1, jid) == 1 then return 1 end
  if not payload or not redis.call('HGET', meta, 'lanes') then return 0 end
  local l = lanes_of(meta)
  for _, id in ipairs(lane_ids(payload)) do
    if exit_lane(l, id, jid) == 1 then return 1 end
  end
  return 0
end

-- Batches (Faktory Enterprise): a batch's record is the hash `hopper:g:{g}:batch:<bid>`
-- (keys.py), named here from the due zset `hopper:g:{g}:batches:due` (members '<kind> <bid>':
-- a callback that may be pushed now). A job of a batch is named in its queue's `batched` hash
-- (named from the queue's meta key): jid -> '<bid>' until it ran, '!<bid>' once it failed;
-- a callback job: jid -> '<kind>:<bid>' (kind complete | success).
-- Record fields: total, pending (jobs not yet ACKed), ran (jobs that ran at least once),
-- failed (jobs whose last run failed), committed, complete / success (the callback jobs),
-- complete_st / success_st ('' | 1 | 2), kids_c / kids_s (children whose complete / success
-- stage has not finished), told_c / told_s (this batch's stages finished, parent told), keep
-- (seconds a finished record is kept), parent, description, created_at.
local batch_due = {n = 0}  -- callbacks this script call marked due

local function batch_keys(meta, index)
  local due = string.sub(index, 1, -5) .. 'batches:due'
  return {batched = string.sub(meta, 1, -5) .. 'batched', due = due,
    expiry = string.sub(index, 1, -5) .. 'batches:expiry'}
end

local function batch_record(due, bid)
  return string.sub(due, 1, -12) .. 'batch:' .. bid
end

-- A batch's state as numbers and flags (nil when the record is gone).
local function batch_read(b)
  local f = redis.call('HMGET', b, 'committed', 'total', 'pending', 'ran', 'kids_c', 'kids_s',
    'complete', 'success', 'complete_st', 'success_st', 'told_c', 'told_s', 'parent', 'keep')
  if not f[2] then return nil end
  local s = {committed = f[1] == '1', total = tonumber(f[2]), pending = tonumber(f[3]),
    ran = tonumber(f[4]), kids_c = tonumber(f[5] or 0), kids_s = tonumber(f[6] or 0),
    has_c = f[7] ~= false, has_s = f[8] ~= false, cst = f[9] or '', sst = f[10] or '',
    told_c = f[11] == '1', told_s = f[12] == '1', parent = f[13], keep = tonumber(f[14] or 0)}
  s.complete = s.committed and s.ran >= s.total and s.kids_c <= 0
  s.succeeded = s.committed and s.pending <= 0 and s.kids_s <= 0
  return s
end

-- The callback a batch may push now: 'complete', 'success' or nil. Success waits for the
-- complete callback's ACK when there is one.
local function batch_next(s)
  if not s then return nil end
  if s.has_c and s.cst == '' then return s.complete and 'complete' or nil end
  if s.has_s and s.sst == '' and s.succeeded and (not s.has_c or s.cst == '2') then
    return 'success'
  end
  return nil
end

-- Look at batch `bid` after a change: a callback it may push now is marked due; a stage that
-- finished (its callback ACKed, or reached with no callback) is told to the parent once, which
-- is looked at in turn; a batch whose stages both finished is purged `keep` seconds later.
local function batch_look(k, bid, now)
  for _ = 1, 100 do  -- up the chain of parents
    local b = batch_record(k.due, bid)
    local s = batch_read(b)
    if not s then return end
    local which = batch_next(s)
    if which then
      batch_due.n = batch_due.n + redis.call('ZADD', k.due, 'NX', now, which .. ' ' .. bid)
    end
    local done_c = s.has_c and s.cst == '2' or not s.has_c and s.complete
    local done_s = s.has_s and s.sst == '2' or not s.has_s and s.succeeded
    local tell_c, tell_s = done_c and not s.told_c, done_s and not s.told_s
    if tell_c then redis.call('HSET', b, 'told_c', 1) end
    if tell_s then redis.call('HSET', b, 'told_s', 1) end
    if (tell_c or tell_s) and (done_c and done_s) then
      redis.call('ZADD', k.expiry, now + s.keep, bid)
    end
    if not (s.parent and (tell_c or tell_s)) then return end
    local p = batch_record(k.due, s.parent)
    if redis.call('EXISTS', p) == 0 then return end
    if tell_c then redis.call('HINCRBY', p, 'kids_c', -1) end
    if tell_s then redis.call('HINCRBY', p, 'kids_s', -1) end
    bid = s.parent
  end
end

-- Jobs of a queue count towards their batches: outcome 'ok' (ACKed), 'fail' (failed, may run
-- again), 'end' (ended other than by ACK, for good: dead purge, discard, cancel, expiry, ...).
-- A callback job's ACK moves its state to 2. Jobs of no batch cost one HMGET.
local function batch_count(meta, index, jids, outcome, now)
  if #jids == 0 then return end
  local k = batch_keys(meta, index)
  local marks = redis.call('HMGET', k.batched, unpack(jids))
  for i, mark in ipairs(marks) do
    if mark then
      local jid = jids[i]
      local kind, bid = string.match(mark, '^(%a+):(.+)$')
      if kind then  -- a callback job
        if outcome ~= 'fail' then redis.call('HDEL', k.batched, jid) end
        local b = batch_record(k.due, bid)
        if outcome == 'ok' and redis.call('EXISTS', b) == 1 then
          redis.call('HSET', b, kind .. '_st', 2)
          batch_look(k, bid, now)
        end
      else
        local failed = string.sub(mark, 1, 1) == '!'
        bid = failed and string.sub(mark, 2) or mark
        if outcome ~= 'fail' then
          redis.call('HDEL', k.batched, jid)
        elseif not failed then
          redis.call('HSET', k.batched, jid, '!' .. bid)
        end
        local b = batch_record(k.due, bid)
        if redis.call('EXISTS', b) == 1 and (outcome == 'ok' or not failed) then
          if outcome == 'ok' then
            redis.call('HINCRBY', b, 'pending', -1)
            redis.call('HINCRBY', b, failed and 'failed' or 'ran', failed and -1 or 1)
          else
            redis.call('HINCRBY', b, 'ran', 1)
            redis.call('HINCRBY', b, 'failed', 1)
          end
          batch_look(k, bid, now)
        end
      end
    end
  end
end
