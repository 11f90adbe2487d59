-- lib_push: the push of jobs of one queue (push.lua), as a function of the library so that
-- push_graph.lua can run it for several queues in one call. Last in the library (store/base.py).
-- push_queue: store new jobs of one queue and enqueue or schedule each of them, atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 scheduled zset, 4 jid index, 5 due:scheduled, 6 queues set,
--       7 finished zset, 8 final hash, 9 progress hash, 10 working, 11 retries, 12 dead,
--       13 due:finished, 14 awaited zset, 15 cron claims hash, 16 meta hash, 17 prioritized
--       zset, 18 expiring zset, then the unique locks named
-- ARGV: 1 pushed channel, 2 queue name, 3 claim ('' or '<field> <tick>': push only if the
--       claims hash says an earlier tick for field, and record this one), 4 finished jobs kept
--       per queue, 5 finished channel, 6 now, 7 the queue's limits as the broker read them
--       within the last second: '' none, 'D' draining (the queue or the broker), else its
--       max_size, 8 'G' for a graph (all or nothing: see below) or '', 9 split mode's jid claims
--       (claim.lua: JSON [each job's index entry before its claim, each job's batch verdict as
--       batch_join() gives it, and for dependants the dependencies' index entries and verdicts,
--       wf_said in lib_workflows.lua]; '' on one Redis); then
--       7-tuples (jid, payload, at, unique, expires, batch, after);
--       at '' = enqueue now; unique '' or '<lock KEYS index> <ttl ms> <mode>', mode success |
--       start | ttl | replace; expires '' or when the job expires (unix seconds); batch '' or
--       '<batch record KEYS index>' (a job of the batch: custom.bid) or '<index> <kind>' (the
--       batch's complete | success callback, pushed only while batch_next() says so); after ''
--       or JSON [policy, dep jid, ...] (workflows: wf_check() and wf_join() in lib_workflows.lua).
-- A job with dependencies not all met waits in `blocked` instead of its place; 7 refused: a
-- dependency is unknown, 8: one did not succeed and the policy is fail ({code, dep jid} for
-- either). With 'G' nothing is stored unless every job may be: the others then get 9.
-- Returns one result per job: 1 stored, 0 refused because its jid names a live job (in any
-- queue, or earlier in this call), 2 refused as not unique; a refused job changes nothing.
-- 6 refused because its batch does not exist (expired, purged). A callback whose batch may not
-- push it now (already pushed, or no longer ready: reopened) gets 3, before its jid is looked
-- at (a push of it by another broker made that jid live); either way its entry
-- '<kind> <bid>' leaves the batches' due zset, and a callback pushed moves its state to 1.
-- With a claim already made for that tick or a later one: every result is 3, and while the
-- queue or the broker drains every result is 5: nothing changes. A queue with a max_size takes
-- jobs to enqueue now only while its list is shorter: 4 for each one beyond (scheduled jobs,
-- and due ones later, are not held back).
-- The jid of a finished job (index entry ~queue) is free: the new job takes the index entry,
-- and a finished job of this queue with that jid is forgotten. So is a jid whose entry names
-- this queue while the queue holds no live job of it (a stale claim, split mode).
-- Unique jobs: a lock key (value '<mode>:<jid>', expiring after the ttl) names the job holding
-- the identity. It is held while its key lives and: success, the holder has not succeeded (it
-- is live, or ended other than done); start, the holder waits (queued or scheduled); ttl,
-- always; replace, as start, and a replace push finds a waiting replace holder: that holder
-- ends 'replaced' and the new job takes the lock. A lock no longer held is taken over.
-- Guarantees: a stored job's record, its jid index entry and its place in the queue or the
-- schedule appear together, and so do a batch job's batched entry and its batch's total and
-- pending counts (split mode: its tally, batch_tally() in lib_batches.lua); a scheduled job's queue is in the due index no later than it is
-- due; an enqueued job's queue is listed. Publishes the queue name when the queue goes from
-- empty to non-empty, so FETCHes waiting on other broker processes wake up; events: pushed,
-- scheduled. Each kind of write is one call for the whole batch (unique jobs cost more).
-- With `graph` ({here = {jid -> queue of every job of the graph}, phase = 'check' | 'write',
-- ending = {jid -> true}}) 'check' only gives the verdicts (nothing written), 'write' stores
-- without a dry run; dependencies are looked up in `here` first. A graph's dry run notes in
-- `ending` the holders its replace pushes end, and a dependency on one of them does not
-- succeed (checked again once one is found), so the write never refuses what the check took.
local function push_queue(KEYS, ARGV, graph)
  local queue = ARGV[2]
  if ARGV[7] == 'D' then
    local refused = {}
    for i = 1, (#ARGV - 9) / 7 do refused[i] = 5 end
    return refused
  end
  -- jobs the queue may still take now (max_size), nil when it has no bound
  local room = ARGV[7] ~= '' and
    tonumber(ARGV[7]) - redis.call('LLEN', KEYS[2]) - redis.call('ZCARD', KEYS[17])
    - (tonumber(redis.call('HGET', KEYS[16], 'laned')) or 0) or nil
  if ARGV[3] ~= '' then
    local field, tick = string.match(ARGV[3], '^(%S+) (%S+)$')
    local last = redis.call('HGET', KEYS[15], field)
    if last and tonumber(last) >= tonumber(tick) then
      local refused = {}
      for i = 1, (#ARGV - 9) / 7 do refused[i] = 3 end
      return refused
    end
    redis.call('HSET', KEYS[15], field, tick)
  end

  -- Whether `jid` (a job of this queue) is waiting: queued or scheduled.
  local function waiting(jid)
    if not live_here(KEYS[1], KEYS[7], jid) then return false end
    for i = 10, 12 do
      if redis.call('ZSCORE', KEYS[i], jid) then return false end
    end
    return true
  end

  -- Whether the lock value `value` ('<mode>:<jid>') still holds its identity.
  local function holds(value)
    local mode, holder = string.match(value, '^(%a+):(.*)$')
    if mode == 'ttl' then return true end
    if mode ~= 'success' then return waiting(holder) end
    if live_here(KEYS[1], KEYS[7], holder) then return true end
    if not redis.call('ZSCORE', KEYS[7], holder) then return false end
    local note = redis.call('HGET', KEYS[8], holder)
    return note ~= false and string.find(note, '"state":"done"', 1, true) == nil
  end

  -- A waiting job taken over by a replace push: it leaves its place (scheduled, in line, or
  -- blocked by its dependencies) and ends replaced.
  local function replace(holder)
    local payload = redis.call('HGET', KEYS[1], holder)
    local base = wf_base(KEYS[1])
    if redis.call('ZREM', KEYS[3], holder) + redis.call('ZREM', base .. 'blocked', holder) == 0
      and leave_line(KEYS[2], KEYS[17], KEYS[16], holder, payload) == 1 and room then
      room = room + 1
    end
    wf_forget(base, {holder})
    redis.call('ZREM', KEYS[18], holder)
    local k = {jobs = KEYS[1], final = KEYS[8], finished = KEYS[7], due = KEYS[13],
      index = KEYS[4], progress = KEYS[9]}
    finish(k, queue, {holder}, {holder, note('replaced', '')}, ARGV[6], ARGV[4], 'replaced')
    batch_count(KEYS[16], KEYS[4], {holder}, 'end', ARGV[6])
    announce(KEYS[14], ARGV[5], {holder})
    if payload and listening() then
      publish({event('replaced', holder, queue, payload, clock(), '')})
    end
  end

  -- Whether a replace push with `spec` will take the place of a job waiting in the queue list.
  local function replaces_waiting(spec)
    local index, _, mode = string.match(spec, '^(%d+) (%d+) (%a+)$')
    local value = mode == 'replace' and redis.call('GET', KEYS[tonumber(index)])
    if not value then return false end
    local held_mode, holder = string.match(value, '^(%a+):(.*)$')
    return held_mode == 'replace' and waiting(holder) and not redis.call('ZSCORE', KEYS[3], holder)
  end

  local locked = {}  -- lock keys taken earlier in this call
  -- Take the lock a unique job asks for ('<index> <ttl ms> <mode>'); false when it is held.
  local function lock(jid, spec)
    local index, ttl, mode = string.match(spec, '^(%d+) (%d+) (%a+)$')
    local key = KEYS[tonumber(index)]
    if locked[key] then return false end
    local value = redis.call('GET', key)
    if value and holds(value) then
      local held_mode, holder = string.match(value, '^(%a+):(.*)$')
      if not (mode == 'replace' and held_mode == 'replace') then return false end
      replace(holder)
    end
    locked[key] = true
    redis.call('SET', key, mode .. ':' .. jid, 'PX', ttl)
    return true
  end

  -- claim.lua: {index entries, batch verdicts, dependencies' index entries, their verdicts}
  local claimed = split and cjson.decode(ARGV[9])
  local owners, batch_said = claimed and claimed[1], claimed and claimed[2]
  wf_said = claimed and {owners = claimed[3] or {}, verdicts = claimed[4] or {}}
  local bk = nil  -- the batch keys, named at the first job of a batch
  -- Whether job i may join the batch `spec` names ('<index>' or '<index> <kind>'): 1 yes, 6
  -- its batch does not exist, 3 (a callback) the batch may not push it now. Reads only (split
  -- mode: the claim step read it, claim.lua).
  local function batch_join(spec, i)
    if split then return batch_said[i] end
    local index, kind = string.match(spec, '^(%d+) ?(%a*)$')
    local b = KEYS[tonumber(index)]
    if kind == '' then return redis.call('EXISTS', b) == 1 and 1 or 6 end
    local s = batch_read(b)
    if not s then return 6 end
    return batch_next(s) == kind and 1 or 3
  end

  -- After the job `jid` was stored (result 1) or refused (result), with the batch `spec`: a job
  -- of the batch is counted and named in batched; a callback leaves the due zset (once decided)
  -- and, pushed, moves its state to 1 (split mode: also when an earlier attempt pushed it and
  -- its tally was lost, the callback's jid being live here).
  local function batch_joined(spec, jid, result)
    local index, kind = string.match(spec, '^(%d+) ?(%a*)$')
    local bid = string.match(KEYS[tonumber(index)], ':batch:(.+)$')
    bk = bk or batch_keys(KEYS[16], KEYS[4])
    if kind == '' then
      if result ~= 1 then return end
      redis.call('HSET', bk.batched, jid, bid)
      batch_tally(bk, bid, jid .. '/j', 'join', '', ARGV[6])
    elseif result == 1 or split and result == 0 and live_here(KEYS[1], KEYS[7], jid) then
      if result == 1 then redis.call('HSET', bk.batched, jid, kind .. ':' .. bid) end
      batch_tally(bk, bid, jid .. '/p', 'pushed', kind, ARGV[6])
    elseif result == 3 or result == 6 then
      global('ZREM', bk.due, kind .. ' ' .. bid)
    end
  end

  local ending = graph and graph.ending or {}  -- holders a graph's replace pushes end
  local function arg(i, f) return ARGV[9 + 7 * (i - 1) + f] end
  local count = (#ARGV - 9) / 7
  if not owners then
    local jids = {}
    for i = 1, count do jids[i] = arg(i, 1) end
    owners = redis.call('HMGET', KEYS[4], unpack(jids))
  end
  local results, taken = {}, {}

  -- Whether a unique job could take its lock now (as lock(), reading only); the holder it
  -- would replace goes in `ending`.
  local function lockable(spec)
    local index, _, mode = string.match(spec, '^(%d+) (%d+) (%a+)$')
    local key = KEYS[tonumber(index)]
    local value = not locked[key] and redis.call('GET', key)
    if locked[key] then return false end
    if not (value and holds(value)) then return true end
    local held_mode, holder = string.match(value, '^(%a+):(.*)$')
    if not (mode == 'replace' and held_mode == 'replace') then return false end
    ending[holder] = true
    return true
  end

  -- The verdict on job i: 1 (stored; its lock taken unless `dry`) or a refusal (and a jid).
  local function verdict(i, dry)
    local jid, at, unique, batch, after = arg(i, 1), arg(i, 3), arg(i, 4), arg(i, 6), arg(i, 7)
    local owner = owners[i]
    if taken[jid] then return 0 end
    -- a callback already pushed (by another broker that read it due too) is refused as such,
    -- not by its jid, which that push made live
    local joined = batch ~= '' and batch_join(batch, i) or 1
    if joined == 3 then return 3 end
    -- split mode: another push of the jid may have claimed and stored it since this claim
    if split and live_here(KEYS[1], KEYS[7], jid) then return 0 end
    -- a live job's entry refuses the jid; one naming this queue for a job the queue does not
    -- hold is stale (split mode: the claim of a push whose script failed, sent again) and free
    if names_live(owner)
      and (owner ~= queue or live_here(KEYS[1], KEYS[7], jid)) then return 0 end
    if room and at == '' and room <= 0 and not (unique ~= '' and replaces_waiting(unique)) then
      return 4
    end
    if joined ~= 1 then return joined end
    if after ~= '' then
      local code, dep = wf_check(KEYS[4], queue, after, graph and graph.here or taken, ending)
      if code ~= 1 then return code, dep end
    end
    if unique ~= '' then
      if dry then
        if not lockable(unique) then return 2 end
        locked[KEYS[tonumber(string.match(unique, '^%d+'))]] = true
      elseif not lock(jid, unique) then
        return 2
      end
    end
    return 1
  end

  local phase = graph and graph.phase  -- a graph across queues (push_graph.lua)
  if ARGV[8] == 'G' or phase == 'check' then  -- a graph: all or nothing
    local before, refused = room, false
    for pass = 1, 2 do  -- again once a replace push is found: a dependency on its holder fails
      local known = next(ending) ~= nil
      room, taken, locked, refused = before, {}, {}, false
      for i = 1, count do
        local code, dep = verdict(i, true)
        results[i] = dep and {code, dep} or code
        if code == 1 then
          taken[arg(i, 1)] = queue
          if room and arg(i, 3) == '' then room = room - 1 end
        else
          refused = true
        end
      end
      if graph or known or next(ending) == nil then break end
    end
    if refused then
      for i = 1, count do
        if results[i] == 1 then results[i] = 9 end
      end
      return results
    end
    if phase == 'check' then return results end
    room, taken, locked = before, {}, {}
  end

  local index, records, waiting, scheduled, expiring = {}, {}, {}, {}, {}
  local waiting_payloads = {}
  local earliest = nil
  local blocked, waits, unmet_deps = {}, {}, {}
  local base = wf_base(KEYS[1])
  for i = 1, count do
    local jid, at, batch, after = arg(i, 1), arg(i, 3), arg(i, 6), arg(i, 7)
    local payload = arg(i, 2)
    local code, dep = verdict(i, false)
    results[i] = dep and {code, dep} or code
    if code == 1 then
      taken[jid] = queue
      index[#index + 1] = jid
      index[#index + 1] = queue
      local unmet, got, policy, pending = 0, '', '', nil
      if after ~= '' then
        unmet, got, policy, pending = wf_join(base, KEYS[4], jid, after,
          graph and graph.here or taken)
        if unmet == 0 then payload = wf_splice(payload, got) end
      end
      records[#records + 1] = jid
      records[#records + 1] = payload
      if arg(i, 5) ~= '' then
        expiring[#expiring + 1] = arg(i, 5)
        expiring[#expiring + 1] = jid
      end
      if unmet > 0 then
        blocked[#blocked + 1] = at == '' and 0 or at
        blocked[#blocked + 1] = jid
        waits[#waits + 1] = jid
        waits[#waits + 1] = unmet .. ' ' .. policy .. ' ' .. got
        unmet_deps[#unmet_deps + 1] = jid
        unmet_deps[#unmet_deps + 1] = cjson.encode(pending)
      elseif at == '' then
        if room then room = room - 1 end
        waiting[#waiting + 1] = jid
        waiting_payloads[#waiting] = payload
      else
        scheduled[#scheduled + 1] = at
        scheduled[#scheduled + 1] = jid
        if not earliest or tonumber(at) < tonumber(earliest) then earliest = at end
      end
    end
    if batch ~= '' then batch_joined(batch, jid, code) end
  end
  if #blocked > 0 then
    redis.call('ZADD', base .. 'blocked', unpack(blocked))
    redis.call('HSET', base .. 'waits', unpack(waits))
    redis.call('HSET', base .. 'unmet', unpack(unmet_deps))
    global('SADD', KEYS[6], queue)  -- listed: FLUSH finds it
  end
  if #index == 0 then return results end
  local stored = {}
  for i = 1, #records, 2 do stored[#stored + 1] = records[i] end
  local finished = redis.call('ZMSCORE', KEYS[7], unpack(stored))
  local old = {}
  for i, jid in ipairs(stored) do
    if finished[i] then old[#old + 1] = jid end
  end
  if #old > 0 then
    redis.call('ZREM', KEYS[7], unpack(old))
    redis.call('HDEL', KEYS[8], unpack(old))
    redis.call('HDEL', KEYS[9], unpack(old))
  end
  if not split then redis.call('HSET', KEYS[4], unpack(index)) end  -- else claimed before
  if #expiring > 0 then  -- and FETCH knows to look (meta: expiring)
    redis.call('ZADD', KEYS[18], unpack(expiring))
    redis.call('HSET', KEYS[16], 'expiring', 1)
  end
  redis.call('HSET', KEYS[1], unpack(records))
  if #waiting > 0 and line_up(KEYS[2], KEYS[17], KEYS[16], waiting, waiting_payloads) then
    -- the queue was empty (or jobs of a priority came): list it and wake fetchers
    global('SADD', KEYS[6], queue)
    redis.call('PUBLISH', ARGV[1], queue)
  end
  if earliest then
    redis.call('ZADD', KEYS[3], unpack(scheduled))
    due_add(KEYS[5], earliest, queue)
  end
  if listening() then
    local now, events = clock(), {}
    for i = 1, count do
      if results[i] == 1 then
        local jid, payload, at = arg(i, 1), arg(i, 2), arg(i, 3)
        if at == '' then
          events[#events + 1] = event('pushed', jid, queue, payload, now, '')
        else
          events[#events + 1] = event('scheduled', jid, queue, payload, now, ',"run_at":' .. at)
        end
      end
    end
    publish(events)
  end
  return results
end
