-- lib_workflows: jobs that run after other jobs (workflows), in the function library after
-- lib_lanes.lua and before lib_batches.lua, whose batch_count() calls wf_count() wherever a
-- job ends.
-- Keys are named from any key of a queue ('hopper:q:{q}:' + name) and from the jid index
-- ('hopper:g:{g}:' + name), as lib_batches.lua does (see keys.py):
--   <q>blocked     zset  jid -> when it may run (0: at once): dependants with unmet dependencies
--   <q>waits       hash  jid -> '<unmet> <policy> <results>' of a blocked job; results are raw
--                        JSON members '"<dep jid>":<result>,...' of the dependencies that succeeded
--   <q>dependants  hash  jid of a live job -> JSON [queue, jid, ...] of the jobs waiting for it
--   <g>wf:due      zset  JSON [outcome, queue, jid, dep, result] -> when: the end of a dependency
--                        to settle in its dependant's queue (workflow.lua takes it: once)
local wf_due = {n = 0}  -- entries this script call added to wf:due

local function wf_base(key) return string.match(key, '^(.*}:)') end
local function wf_queue(base) return string.match(base, '{(.*)}:$') end

-- A payload with custom._results = {results} (a dependant always has custom: custom.after).
local function wf_splice(payload, results)
  if results == '' then return payload end
  local _, e = string.find(payload, '"custom":{', 1, true)
  local spliced = '"_results":{' .. results .. '},'
  return string.sub(payload, 1, e) .. spliced .. string.sub(payload, e + 1)
end

-- A blocked job whose dependencies are met goes into line (or its schedule), results spliced.
local function wf_release(base, index, jid, results, now)
  local at = redis.call('ZSCORE', base .. 'blocked', jid)
  redis.call('ZREM', base .. 'blocked', jid)
  redis.call('HDEL', base .. 'waits', jid)
  local payload = redis.call('HGET', base .. 'jobs', jid)
  if not (payload and at) then return end
  payload = wf_splice(payload, results)
  redis.call('HSET', base .. 'jobs', jid, payload)
  local queue, g = wf_queue(base), string.sub(index, 1, -5)
  if tonumber(at) > tonumber(now) then
    redis.call('ZADD', base .. 'scheduled', at, jid)
    redis.call('ZADD', g .. 'due:scheduled', 'LT', at, queue)
  elseif line_up(base .. 'queue', base .. 'prioritized', base .. 'meta', {jid}, {payload}) then
    redis.call('SADD', g .. 'queues', queue)
    redis.call('PUBLISH', 'hopper:pushed', queue)
  end
end

-- Settle one dependency's end (outcome 'ok' or 'end', its result) for dependant `jid` of the
-- queue `base`: '' no such dependant (gone), 'waiting', 'released', or 'fail' (its policy says
-- it fails: the caller ends it).
local function wf_settle(base, index, jid, dep, outcome, result, now)
  local w = redis.call('HGET', base .. 'waits', jid)
  if not w then return '' end
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
          local entry = cjson.encode({outcome, names[j], names[j + 1], dep, result})
          wf_due.n = wf_due.n + redis.call('ZADD', due, 'NX', now, entry)
        end
      end
    end
  end
end

-- Push: may a job with dependencies `spec` (JSON [policy, dep, ...]) be stored? `here` maps
-- the jids stored in this call (earlier, or anywhere in a graph) to their queues; `ending` (or
-- nil) holds the live jobs this call ends (a graph's replace pushes): they do not succeed.
-- Returns 1, or 7 and an unknown dependency, or 8 and a dependency that did not succeed
-- (policy fail). Reads only.
local function wf_check(index, queue, spec, here, ending)
  local a = cjson.decode(spec)
  for i = 2, #a do
    local owner = here[a[i]] or redis.call('HGET', index, a[i])
    if not owner then return 7, a[i] end
    local finished = string.sub(owner, 1, 1) == '~'
    local base = 'hopper:q:{' .. (finished and string.sub(owner, 2) or owner) .. '}:'
    local failed
    if ending and ending[a[i]] then
      failed = true
    elseif finished then
      local text = redis.call('HGET', base .. 'final', a[i])
      failed = text and not string.find(text, '^{"state":"done"')
    else
      failed = redis.call('ZSCORE', base .. 'dead', a[i]) ~= false
    end
    if failed and a[1] == 'fail' then return 8, a[i] end
  end
  return 1
end

-- Push: the stored job `jid` of `base` waits for its dependencies (checked by wf_check): each
-- live one names it among its dependants; returns the number unmet and the results of those
-- that succeeded. A dead or failed one counts as met (policy run). `here` as in wf_check.
local function wf_join(base, index, jid, spec, here)
  local a = cjson.decode(spec)
  local queue, unmet, got = wf_queue(base), 0, {}
  for i = 2, #a do
    local dep = a[i]
    local owner = here[dep] or redis.call('HGET', index, dep)
    local finished = string.sub(owner, 1, 1) == '~'
    local b = 'hopper:q:{' .. (finished and string.sub(owner, 2) or owner) .. '}:'
    if finished then
      local text = redis.call('HGET', b .. 'final', dep)
      if not text or string.find(text, '^{"state":"done"') then
        got[#got + 1] = cjson.encode(dep) .. ':' .. wf_result(b, dep)
      end
    elseif not redis.call('ZSCORE', b .. 'dead', dep) then
      unmet = unmet + 1
      local list = redis.call('HGET', b .. 'dependants', dep)
      local names = list and cjson.decode(list) or {}
      names[#names + 1] = queue
      names[#names + 1] = jid
      redis.call('HSET', b .. 'dependants', dep, cjson.encode(names))
    end
  end
  return unmet, table.concat(got, ','), a[1]
end
