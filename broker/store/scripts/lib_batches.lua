-- lib_batches: helpers for batches, in the function library after lib_lanes.lua (see
-- store/base.py).

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
local batch_due = {n = 0}  -- callbacks this call marked due (reset as each call begins)

local function batch_keys(meta, index)
  local due = string.sub(index, 1, -5) .. 'batches:due'
  return {batched = string.sub(meta, 1, -5) .. 'batched', due = due,
    expiry = string.sub(index, 1, -5) .. 'batches:expiry',
    tallies = string.sub(meta, 1, -5) .. 'tallies'}
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

-- What a job's push or end changes in its batch's record (a tally): 'join' (a job pushed into
-- it), 'ok' (ACKed, never failed), 'okf' (ACKed after failing), 'fail' (its first failure, or
-- an end without ACK, for good), 'pushed' / 'acked' (of its `kind` callback job).
local function batch_tally_now(k, bid, op, kind, now)
  local b = batch_record(k.due, bid)
  if redis.call('EXISTS', b) == 0 then return end
  if op == 'join' then
    redis.call('HINCRBY', b, 'total', 1)
    redis.call('HINCRBY', b, 'pending', 1)
    return
  elseif op == 'pushed' then
    redis.call('ZREM', k.due, kind .. ' ' .. bid)
    if redis.call('HGET', b, kind .. '_st') ~= '2' then redis.call('HSET', b, kind .. '_st', 1) end
    return
  elseif op == 'acked' then
    redis.call('HSET', b, kind .. '_st', 2)
  elseif op == 'ok' or op == 'okf' then
    redis.call('HINCRBY', b, 'pending', -1)
    redis.call('HINCRBY', b, op == 'okf' and 'failed' or 'ran', op == 'okf' and -1 or 1)
  else
    redis.call('HINCRBY', b, 'ran', 1)
    redis.call('HINCRBY', b, 'failed', 1)
  end
  batch_look(k, bid, now)
end

-- Split mode: a tally made on the global keys once (`id`, '<jid>/<step>', is noted in the
-- batch's told set), whether it comes from the call's outbox or from the queue's tallies hash
-- (the same tally, kept there until the batches loop has applied it: a tally lost with an
-- outbox is made by that loop then). Returns 1 when made now.
AFTER.batch_tally = function(due, expiry, bid, id, op, kind, now)
  local b = batch_record(due, bid)
  if redis.call('EXISTS', b) == 0 or redis.call('SADD', b .. ':told', id) == 0 then return 0 end
  batch_tally_now({due = due, expiry = expiry}, bid, op, kind, tonumber(now))
  return 1
end

-- A tally for batch `bid` (the step `id` of one job, see AFTER.batch_tally): made now on one
-- Redis; in split mode kept in the queue's tallies hash and sent in the outbox. A job's end
-- sends its join again first while the queue still keeps it (the join's outbox may have been
-- lost, and an end counted before its join could complete the batch early); made once.
local function batch_tally(k, bid, id, op, kind, now)
  if not split then return batch_tally_now(k, bid, op, kind, now) end
  if op == 'ok' or op == 'okf' or op == 'fail' then
    local join = string.sub(id, 1, -3) .. '/j'
    local kept = redis.call('HGET', k.tallies, join)
    if kept then
      local t = cjson.decode(kept)
      defer('batch_tally', 2, k.due, k.expiry, t[1], join, t[2], t[3], t[4])
    end
  end
  redis.call('HSET', k.tallies, id, cjson.encode({bid, op, kind, now}))
  defer('batch_tally', 2, k.due, k.expiry, bid, id, op, kind, now)
end

-- Jobs of a queue count towards their batches: outcome 'ok' (ACKed), 'fail' (failed, may run
-- again), 'end' (ended other than by ACK, for good: dead purge, discard, cancel, expiry, ...).
-- A callback job's ACK moves its state to 2. Jobs of no batch cost one HMGET. The jobs waiting
-- for these (workflows) are settled here too (wf_count(), lib_workflows.lua), but for 'fail'.
local function batch_count(meta, index, jids, outcome, now)
  if #jids == 0 then return end
  if outcome ~= 'fail' then wf_count(meta, index, jids, outcome, now) end
  local k = batch_keys(meta, index)
  local marks = redis.call('HMGET', k.batched, unpack(jids))
  for i, mark in ipairs(marks) do
    if mark then
      local jid = jids[i]
      local kind, bid = string.match(mark, '^(%a+):(.+)$')
      if kind then  -- a callback job
        if outcome ~= 'fail' then redis.call('HDEL', k.batched, jid) end
        if outcome == 'ok' then batch_tally(k, bid, jid .. '/c', 'acked', kind, now) end
      else
        local failed = string.sub(mark, 1, 1) == '!'
        bid = failed and string.sub(mark, 2) or mark
        if outcome ~= 'fail' then
          redis.call('HDEL', k.batched, jid)
        elseif not failed then
          redis.call('HSET', k.batched, jid, '!' .. bid)
        end
        if outcome == 'ok' then
          batch_tally(k, bid, jid .. '/o', failed and 'okf' or 'ok', '', now)
        elseif not failed then
          batch_tally(k, bid, jid .. '/f', 'fail', '', now)
        end
      end
    end
  end
end

-- Jobs dead for good (their last FAIL, or MUTATE kill): their batches count them as failed and
-- the jobs waiting for them (workflows) settle their end.
local function died(meta, index, jids, now)
  batch_count(meta, index, jids, 'fail', now)
  wf_count(meta, index, jids, 'end', now)
end

-- A dependency's end marked due (e: the wf:due entry {outcome, queue, jid, dep, result})
-- settled in its dependant's queue (workflow.lua, settle.lua): wf_settle()'s answer. A
-- dependant whose policy fails ends cancelled (kept like a done job, see finish() in lib.lua),
-- leaves `blocked`, and its own end is counted (its batch; the jobs waiting for it, which may
-- mark more ends due). Events: cancelled.
local function wf_end(index, awaited, channel, keep, e, now)
  local outcome, queue, jid, dep, result = e[1], e[2], e[3], e[4], e[5]
  local base = 'hopper:q:{' .. queue .. '}:'
  local said = wf_settle(base, index, jid, dep, outcome, result, now)
  if said ~= 'fail' then return said end
  redis.call('ZREM', base .. 'blocked', jid)
  wf_forget(base, {jid})
  local payload = redis.call('HGET', base .. 'jobs', jid)
  local k = {jobs = base .. 'jobs', final = base .. 'final', finished = base .. 'finished',
    due = string.sub(index, 1, -5) .. 'due:finished', index = index, progress = base .. 'progress'}
  finish(k, queue, {jid}, {jid, note('cancelled', '')}, now, keep, 'cancelled')
  batch_count(base .. 'meta', index, {jid}, 'end', now)
  announce(awaited, channel, {jid})
  if payload and listening() then
    local extra = ',"dependency":' .. cjson.encode(dep)
    publish({event('cancelled', jid, queue, payload, clock(), extra)})
  end
  return said
end

-- Each call of a script begins with the helpers' per-call state cleared (store/base.py), and
-- says whether it runs in split mode (lib_outbox.lua).
local function begin_call(split_mode)
  batch_due.n = 0
  wf_due.n = 0
  begin_outbox(split_mode)
end
