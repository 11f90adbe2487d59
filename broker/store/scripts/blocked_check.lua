-- blocked_check: blocked jobs (workflows) that wait for more ends than will come (hopper
-- check), checked and (when asked) repaired atomically per job.
-- KEYS: 1 the queue's jobs hash, 2 jid index, 3 wf:due zset
-- ARGV: 1 queue name, 2 '1' to repair, then the jids
-- An end comes to a blocked job from each unmet dependency that is a live job naming it in its
-- queue's dependants, or that is already due for it in wf:due (lib_workflows.lua); a dead one
-- brought its end when it died (fail.lua, move.lua), so one that still names it (left by a
-- version that did not settle MUTATE kill) brings none. A job whose count (waits) is higher
-- waits for good. Returns the jids of those; with repair, the ends
-- missing are marked due in wf:due as ends without success (outcome 'end', on dependencies
-- that bring none), and the workflows loop settles them under the job's policy.
local queue, repair = ARGV[1], ARGV[2] == '1'
local base = wf_base(KEYS[1])
local due = {}  -- dependencies whose end is due for a job of this queue: jid -> {dep -> true}
for _, entry in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local e = cjson.decode(entry)
  if e[2] == queue then
    due[e[3]] = due[e[3]] or {}
    due[e[3]][e[4]] = true
  end
end

-- Whether `dep`, live and not dead, names (queue, jid) among its dependants.
local function names(dep, jid)
  local owner = redis.call('HGET', KEYS[2], dep)
  if not owner or string.sub(owner, 1, 1) == '~' then return false end
  local b = 'hopper:q:{' .. owner .. '}:'
  if redis.call('ZSCORE', b .. 'dead', dep) then return false end
  local list = redis.call('HGET', b .. 'dependants', dep)
  local found = list and cjson.decode(list) or {}
  for i = 1, #found, 2 do
    if found[i] == queue and found[i + 1] == jid then return true end
  end
  return false
end

local stranded = {}
for i = 3, #ARGV do
  local jid = ARGV[i]
  local w = redis.call('HGET', base .. 'waits', jid)
  local payload = redis.call('HGET', KEYS[1], jid)
  if w and payload and redis.call('ZSCORE', base .. 'blocked', jid) then
    local unmet = tonumber(string.match(w, '^(%d+)')) or 0
    local after = redis.call('HGET', base .. 'unmet', jid)  -- the ends it waits for, if listed
    if after then
      after = cjson.decode(after)
    else  -- a job blocked by an older version: its dependencies, met ones included
      local ok, job = pcall(cjson.decode, payload)
      after = ok and type(job) == 'table' and type(job.custom) == 'table' and job.custom.after
    end
    local coming, silent, seen = 0, {}, {}
    for _, dep in ipairs(type(after) == 'table' and after or {}) do
      if type(dep) == 'string' and not seen[dep] then
        seen[dep] = true
        if (due[jid] and due[jid][dep]) or names(dep, jid) then
          coming = coming + 1
        else
          silent[#silent + 1] = dep
        end
      end
    end
    if coming < unmet then
      stranded[#stranded + 1] = jid
      if repair then
        local now = tonumber(clock())
        for j = 1, math.min(unmet - coming, #silent) do
          redis.call('ZADD', KEYS[3], 'NX', now, cjson.encode({'end', queue, jid, silent[j], 'null'}))
        end
      end
    end
  end
end
return stranded
