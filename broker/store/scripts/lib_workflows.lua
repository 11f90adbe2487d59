-- lib_workflows: jobs that run after other jobs (workflows), in the function library after
-- lib_lanes.lua and before lib_batches.lua, whose batch_count() calls wf_count() wherever a
-- job ends.
-- Keys are named from any key of a queue ('hopper:q:{q}:' + name) and from the jid index
-- ('hopper:g:{g}:' + name), as lib_batches.lua does (see keys.py):
--   <q>blocked     zset  jid -> when it may run (0: at once): dependants with unmet dependencies
--   <q>waits       hash  jid -> '<unmet> <policy> <results>' of a blocked job; results are raw
--                        JSON members '"<dep jid>":<result>,...' of the dependencies that succeeded
--   <q>dependants  hash  jid of a live job -> JSON [queue, jid, ...] of the jobs waiting for it
--   <q>unmet       hash  jid of a blocked job -> JSON [dep, ...], the dependencies whose end it
--                        still waits for: each end is counted once, and only by a job waiting
--                        for it (a name left in `dependants` by an earlier job of that jid,
--                        cancelled or replaced, counts for nothing)
--   <g>wf:due      zset  JSON [outcome, queue, jid, dep, result] -> when: the end of a dependency
--                        to settle in its dependant's queue (workflow.lua takes it: once)
-- Split mode (docs/cluster.md, "Workflows"): a push registers its dependant with the
-- dependencies of other queues first (wf_register.lua), then passes their verdicts to its own
-- script (wf_said); an end that must reach another queue is a tally (the queue's `tallies`
-- hash and the outbox, see batch_tally() in lib_batches.lua) whose second step marks it in
-- wf:due; settle.lua settles it in the dependant's queue, idempotently (`unmet`).
local wf_due = {n = 0}  -- entries this script call added to wf:due
local wf_said = nil  -- split mode, a push: {owners = {dep -> index entry}, verdicts = {dep ->
-- {code, result}}} (wf_register.lua), set by push_queue() for its call

local function wf_base(key) return string.match(key, '^(.*}:)') end
local function wf_queue(base) return string.match(base, '{(.*)}:$') end

-- A payload with custom._results = {results} (a dependant always has custom: custom.after).
local function wf_splice(payload, results)
  if results == '' then return payload end
  local _, e = string.find(payload, '"custom":{', 1, true)
  local spliced = '"_results":{' .. results .. '},'
  return string.sub(payload, 1, e) .. spliced .. string.sub(payload, e + 1)
end

-- Blocked jobs leave their notes (they were released, ended or deleted).
local function wf_forget(base, jids)
  redis.call('HDEL', base .. 'waits', unpack(jids))
  redis.call('HDEL', base .. 'unmet', unpack(jids))
end

-- The blocked job `jid` no longer waits for `dep`; false when it did not (an end settled
-- before, a name left by an earlier job of that jid, or a registration left by a push that
-- was refused). A job blocked by an older version has no list: each end counts.
local function wf_unwait(base, jid, dep)
  local list = redis.call('HGET', base .. 'unmet', jid)
  if not list then return true end
  local deps, left, found = cjson.decode(list), {}, false
  for _, d in ipairs(deps) do
    if d == dep and not found then found = true else left[#left + 1] = d end
  end
  if not found then return false end
  if #left > 0 then
    redis.call('HSET', base .. 'unmet', jid, cjson.encode(left))
  else
    redis.call('HDEL', base .. 'unmet', jid)
  end
  return true
end

-- A blocked job whose dependencies are met goes into line (or its schedule), results spliced.
local function wf_release(base, index, jid, results, now)
  local at = redis.call('ZSCORE', base .. 'blocked', jid)
  redis.call('ZREM', base .. 'blocked', jid)
  wf_forget(base, {jid})
  local payload = redis.call('HGET', base .. 'jobs', jid)
  if not (payload and at) then return end
  payload = wf_splice(payload, results)
  redis.call('HSET', base .. 'jobs', jid, payload)
  local queue, g = wf_queue(base), string.sub(index, 1, -5)
  if tonumber(at) > tonumber(now) then
    redis.call('ZADD', base .. 'scheduled', at, jid)
    due_add(g .. 'due:scheduled', at, queue)
  elseif line_up(base .. 'queue', base .. 'prioritized', base .. 'meta', {jid}, {payload}) then
    global('SADD', g .. 'queues', queue)
    redis.call('PUBLISH', 'hopper:pushed', queue)
  end
end

-- Settle one dependency's end (outcome 'ok' or 'end', its result) for dependant `jid` of the
-- queue `base`: '' no such dependant (gone, or not waiting for that end), 'waiting',
-- 'released', or 'fail' (its policy says it fails: the caller ends it).
local function wf_settle(base, index, jid, dep, outcome, result, now)
  local w = redis.call('HGET', base .. 'waits', jid)
  if not w or not wf_unwait(base, jid, dep) then return '' end
  local n, policy, got = string.match(w, '^(%d+) (%a+) ?(.*)$')
  if outcome ~= 'ok' and policy == 'fail' then return 'fail' end
  if outcome == 'ok' then
    got = got .. (got ~= '' and ',' or '') .. cjson.encode(dep) .. ':' .. result
  end
  n = tonumber(n) - 1
  if n > 0 then
    redis.call('HSET', base .. 'waits', jid, n .. ' ' .. policy .. ' ' .. got)
    return 'waiting'
  end
  wf_release(base, index, jid, got, now)
  return 'released'
end

-- A finished job's result as raw JSON ('null': none), from its note (see note() in lib.lua).
local function wf_result(base, jid)
  local text = redis.call('HGET', base .. 'final', jid)
  return text and string.match(text, '"result":(.*)}$') or 'null'
end

-- An end to settle through wf:due (entry: JSON [outcome, queue, jid, dep, result]), marked
-- now; in split mode a tally of the queue `base` (kept in its tallies hash, `<entry>/w`, until
-- the batches loop made it, and sent in the outbox).
AFTER.wf_due = function(due, entry, now)
  wf_due.n = wf_due.n + redis.call('ZADD', due, 'NX', now, entry)
end

local function wf_mark(base, due, entry, now)
  if not split then return AFTER.wf_due(due, entry, now) end
  redis.call('HSET', base .. 'tallies', entry .. '/w', cjson.encode({entry, now}))
  defer('wf_due', 1, due, entry, now)
end

-- Jobs of the queue of `key` ended: outcome 'ok' (ACKed) or 'end' (for good, without success).
-- Their dependants are settled: a same-queue one after an ACK at once, any other through
-- wf:due. Jobs nobody waits for cost one HMGET.
local function wf_count(key, index, jids, outcome, now)
  if #jids == 0 then return end
  local base = wf_base(key)
  local lists = redis.call('HMGET', base .. 'dependants', unpack(jids))
  local queue, due = wf_queue(base), string.sub(index, 1, -5) .. 'wf:due'
  for i, list in ipairs(lists) do
    if list then
      local dep = jids[i]
      redis.call('HDEL', base .. 'dependants', dep)
      local result = outcome == 'ok' and wf_result(base, dep) or 'null'
      local names = cjson.decode(list)
      for j = 1, #names, 2 do
        if names[j] == queue and outcome == 'ok' then
          wf_settle(base, index, names[j + 1], dep, outcome, result, now)
        else
          wf_mark(base, due, cjson.encode({outcome, names[j], names[j + 1], dep, result}), now)
        end
      end
    end
  end
end

-- Push: where dependency `dep` of a job of `queue` stands: nil (unknown); 'live' or 'finished'
-- and its queue's key prefix; or (split mode, a job of another queue) 'said' and the verdict
-- wf_register.lua gave in that queue's slot before this call: {code, result}, code 'u' unmet
-- (registered), 'm' met (result: its raw JSON), 'f' did not succeed, '7' unknown. `here` maps
-- the jids stored in this call (earlier, or anywhere in a graph) to their queues; any other
-- is found in the index (split mode: as the claim step read it, claim.lua), and in split mode
-- one of `queue` itself from the queue's own records, which that read may lag behind.
local function wf_where(index, queue, dep, here)
  local owner = here[dep]
  if not owner then
    if split then owner = wf_said.owners[dep] else owner = redis.call('HGET', index, dep) end
  end
  if not owner then return nil end
  local finished = string.sub(owner, 1, 1) == '~'
  local home = finished and string.sub(owner, 2) or owner
  local base = 'hopper:q:{' .. home .. '}:'
  if not split or here[dep] then return finished and 'finished' or 'live', base end
  if home ~= queue then return 'said', wf_said.verdicts[dep] or {'7'} end
  if live_here(base .. 'jobs', base .. 'finished', dep) then return 'live', base end
  if finished or redis.call('ZSCORE', base .. 'finished', dep) then return 'finished', base end
  return nil
end

-- Push: may a job with dependencies `spec` (JSON [policy, dep, ...]) be stored? `here` as in
-- wf_where; `ending` (or nil) holds the live jobs this call ends (a graph's replace pushes):
-- they do not succeed. Returns 1, or 7 and an unknown dependency, or 8 and a dependency that
-- did not succeed (policy fail). Reads only.
local function wf_check(index, queue, spec, here, ending)
  local a = cjson.decode(spec)
  for i = 2, #a do
    local dep = a[i]
    local kind, at = wf_where(index, queue, dep, here)
    if not kind or kind == 'said' and at[1] == '7' then return 7, dep end
    local failed
    if ending and ending[dep] then
      failed = true
    elseif kind == 'said' then
      failed = at[1] == 'f'
    elseif kind == 'finished' then
      local text = redis.call('HGET', at .. 'final', dep)
      failed = text and not string.find(text, '^{"state":"done"')
    else
      failed = redis.call('ZSCORE', at .. 'dead', dep) ~= false
    end
    if failed and a[1] == 'fail' then return 8, dep end
  end
  return 1
end

-- Push: the stored job `jid` of `base` waits for its dependencies (checked by wf_check): each
-- live one names it among its dependants (split mode: one of another queue did, in
-- wf_register.lua); returns the number unmet, the results of those that succeeded, the policy
-- and the unmet dependencies. A dead or failed one counts as met (policy run). `here` as in
-- wf_where.
local function wf_join(base, index, jid, spec, here)
  local a = cjson.decode(spec)
  local queue, unmet, got = wf_queue(base), {}, {}
  for i = 2, #a do
    local dep = a[i]
    local kind, at = wf_where(index, queue, dep, here)
    if kind == 'said' then
      if at[1] == 'u' then unmet[#unmet + 1] = dep end
      if at[1] == 'm' then got[#got + 1] = cjson.encode(dep) .. ':' .. at[2] end
    elseif kind == 'finished' then
      local text = redis.call('HGET', at .. 'final', dep)
      if not text or string.find(text, '^{"state":"done"') then
        got[#got + 1] = cjson.encode(dep) .. ':' .. wf_result(at, dep)
      end
    elseif not redis.call('ZSCORE', at .. 'dead', dep) then
      unmet[#unmet + 1] = dep
      local list = redis.call('HGET', at .. 'dependants', dep)
      local names, named = list and cjson.decode(list) or {}, false
      for j = 1, #names, 2 do named = named or names[j] == queue and names[j + 1] == jid end
      if not named then  -- else left by an earlier job of this jid: it names this one now
        names[#names + 1] = queue
        names[#names + 1] = jid
        redis.call('HSET', at .. 'dependants', dep, cjson.encode(names))
      end
    end
  end
  return #unmet, table.concat(got, ','), a[1], unmet
end
