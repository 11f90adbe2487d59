-- lib_history: the archive of jobs that reached a final state, first in the function library
-- (see store/base.py): finish() in lib.lua and the dead path of fail.lua call archive().
--
-- Per queue (its hash tag), named from its jobs key (keys.py: QueueKeys.history):
--   history                hash  jid -> entry: {"state","at","jobtype","reserved_until"?,
--                                "result"?,"job":<the payload, args dropped if asked>}
--   ended:<state>          zset  jid -> when it ended (unix seconds): newest first for queries,
--                                oldest first for retention
--   ended:<state>:<type>   zset  the same, for one jobtype
-- Global, named from the jid index key (keys.py: HISTORY_COUNT, due_ended()):
--   history:count          hash  state -> entries kept, every queue together (retention by count)
--   due:ended:<state>      zset  queue -> a time at or before its oldest entry of that state
-- An entry is a snapshot: a jid archived again in the same queue (reused, or dead and then
-- retried and done) replaces its entry. States: done, dead, discarded, cancelled, expired,
-- replaced.

local FINAL_STATES = {'done', 'dead', 'discarded', 'cancelled', 'expired', 'replaced'}  -- keys.py

-- A payload's jobtype: the first "jobtype" key is the job's own (scalar fields come before
-- custom and args, see broker/jobs.py; in an entry, the entry's own comes first); one with
-- escapes is decoded.
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

local function history_keys(jobs, index)
  local q, g = string.sub(jobs, 1, -5), string.sub(index, 1, -5)
  return {history = q .. 'history', ended = q .. 'ended:', count = g .. 'history:count',
    due = g .. 'due:ended:'}
end

-- Drop the entries of `jids` (in the history hash `h.history`, `entries` their texts, `state`
-- theirs or nil: each entry says) from their indexes and the counts; the caller deletes or
-- replaces the entries themselves.
local function unindex(h, jids, entries, state)
  local counts, members = {}, {}  -- per state; per index key
  for i, jid in ipairs(jids) do
    local entry = entries[i]
    local ended = state or string.match(entry, '^{"state":"(%a+)"')
    local key = h.ended .. ended
    local keys = {key, entry and key .. ':' .. jobtype_of(entry)}
    for _, index in ipairs(keys) do
      members[index] = members[index] or {}
      table.insert(members[index], jid)
    end
    counts[ended] = (counts[ended] or 0) + 1
  end
  for index, gone in pairs(members) do redis.call('ZREM', index, unpack(gone)) end
  for ended, n in pairs(counts) do redis.call('HINCRBY', h.count, ended, -n) end
end

-- Archive `jids` of `queue` that ended now in `state` at `at`: `payloads` their records (nil
-- for one already gone: not archived), `extras` raw JSON members (',"k":v') per jid or nil.
-- `mode`: '' archives nothing, 'a' the whole payload, 'n' the payload without its args.
-- Each job gets its own score (at in whole µs, + i µs) so that a page's cursor is exact and an
-- entry's time, as HISTORY writes it (µs), finds the entry again as a bound.
local function archive(jobs, index, queue, mode, state, at, jids, payloads, extras)
  if mode == '' or #jids == 0 then return end
  local h = history_keys(jobs, index)
  local old = redis.call('HMGET', h.history, unpack(jids))
  local again, again_entries = {}, {}
  for i, jid in ipairs(jids) do
    if old[i] then
      again[#again + 1] = jid
      again_entries[#again_entries + 1] = old[i]
    end
  end
  if #again > 0 then unindex(h, again, again_entries) end
  local entries, scored, types, first = {}, {}, {}, nil
  local micros = math.floor(tonumber(at) * 1e6 + 0.5)
  for i, jid in ipairs(jids) do
    local payload = payloads[i]
    if payload then
      local score = (micros + i - 1) / 1e6
      first = first or score
      if mode == 'n' then
        local ok, job = pcall(cjson.decode, payload)
        if ok and type(job) == 'table' then
          job.args = nil
          payload = cjson.encode(job)
        end
      end
      local jobtype = jobtype_of(payload)
      entries[#entries + 1] = jid
      entries[#entries + 1] = '{"state":"' .. state .. '","at":' .. string.format('%.6f', score)
        .. ',"jobtype":' .. cjson.encode(jobtype) .. (extras and extras[i] or '')
        .. ',"job":' .. payload .. '}'
      scored[#scored + 1] = score
      scored[#scored + 1] = jid
      local typed = types[jobtype]
      if not typed then
        typed = {}
        types[jobtype] = typed
      end
      typed[#typed + 1] = score
      typed[#typed + 1] = jid
    end
  end
  if #entries == 0 then return end
  local key = h.ended .. state
  redis.call('HSET', h.history, unpack(entries))
  redis.call('ZADD', key, unpack(scored))
  for jobtype, typed in pairs(types) do redis.call('ZADD', key .. ':' .. jobtype, unpack(typed)) end
  redis.call('HINCRBY', h.count, state, #scored / 2)
  redis.call('ZADD', h.due .. state, 'LT', first, queue)
end
