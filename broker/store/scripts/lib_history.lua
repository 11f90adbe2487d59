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
--   history:count          hash  state -> entries kept, every queue together (retention by count;
--                                one Redis only: in split mode the count is the sum of the
--                                queues' ended:<state> sizes, store/history.py)
--   due:ended:<state>      zset  queue -> a time at or before its oldest entry of that state
-- An entry is a snapshot: a jid archived again in the same queue (reused, or dead and then
-- retried and done) replaces its entry. States: done, dead, discarded, cancelled, expired,
-- replaced.

local FINAL_STATES = {'done', 'dead', 'discarded', 'cancelled', 'expired', 'replaced'}  -- keys.py

-- A payload's jobtype: the first "jobtype" key is the job's own (scalar fields come before
-- custom and args, see client/schema/jobs.py; in an entry, the entry's own comes first); one with
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

-- The payload without its top-level "args" member, cut as text so that every other byte stays
-- as stored (decoding and encoding again would round numbers to 14 digits and turn [] into
-- {}): a scan of the top level, skipping strings and nested values.
local function without_args(payload)
  local depth, pos, key = 0, 1, nil  -- key: where a top-level "args" member begins
  while true do
    local s = string.find(payload, '["{}%[%]]', pos)
    if not s then return payload end
    local c = string.byte(payload, s)
    if c == 34 then  -- '"': to the string's closing quote
      local e = s
      repeat
        e = string.find(payload, '["\\]', e + 1)
        if not e then return payload end
        local escaped = string.byte(payload, e) == 92
        if escaped then e = e + 1 end
      until not escaped
      if depth == 1 and not key and string.sub(payload, s, e + 1) == '"args":' then
        if not string.find('[{', string.sub(payload, e + 2, e + 2), 1, true) then
          return payload  -- not a list (a job's args always is): kept
        end
        key = s
      end
      pos = e + 1
    elseif c == 123 or c == 91 then  -- '{' '['
      depth, pos = depth + 1, s + 1
    else
      depth, pos = depth - 1, s + 1
      if key and depth == 1 then  -- the end of args' value: cut the member and one comma
        local before, after = string.sub(payload, 1, key - 1), string.sub(payload, s + 1)
        if string.sub(before, -1) == ',' then return string.sub(before, 1, -2) .. after end
        return before .. string.gsub(after, '^,', '')
      end
    end
  end
end

-- One Redis: the count of `state` goes up by n (none in split mode, see above).
local function count_archived(h, state, n)
  if not split then redis.call('HINCRBY', h.count, state, n) end
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
  for ended, n in pairs(counts) do count_archived(h, ended, -n) end
end

-- Archive `jids` of `queue` that ended now in `state` at `at`: `payloads` their records (nil
-- for one already gone: not archived), `extras` raw JSON members (',"k":v') per jid or nil.
-- `mode`: '' archives nothing, 'a' the whole payload, 'n' the payload without its args.
-- Each job gets its own score (at in whole µs, + i µs) so that a page's cursor is exact and an
-- entry's time, as HISTORY writes it (µs), finds the entry again as a bound. A jid archived
-- before in this queue has its earlier entry unindexed; one job alone (the common ACK) is
-- written with HSETNX, which reads the earlier entry only when there is one.
local function archive(jobs, index, queue, mode, state, at, jids, payloads, extras)
  if mode == '' or #jids == 0 then return end
  local h = history_keys(jobs, index)
  local entries, scored, types, first = {}, {}, {}, nil
  local micros = math.floor(tonumber(at) * 1e6 + 0.5)
  for i, jid in ipairs(jids) do
    local payload = payloads[i]
    if payload then  -- one without a payload keeps its earlier entry, if any
      local score = (micros + i - 1) / 1e6
      first = first or score
      local jobtype = jobtype_of(payload)
      if mode == 'n' then payload = without_args(payload) end
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
  local written = #entries == 2 and redis.call('HSETNX', h.history, entries[1], entries[2]) == 1
  if not written then
    local archived = {}
    for i = 1, #entries, 2 do archived[#archived + 1] = entries[i] end
    local old = redis.call('HMGET', h.history, unpack(archived))
    local again, again_entries = {}, {}
    for i, jid in ipairs(archived) do
      if old[i] then  -- replaced below
        again[#again + 1] = jid
        again_entries[#again_entries + 1] = old[i]
      end
    end
    if #again > 0 then unindex(h, again, again_entries) end
    redis.call('HSET', h.history, unpack(entries))
  end
  local key = h.ended .. state
  redis.call('ZADD', key, unpack(scored))
  for jobtype, typed in pairs(types) do redis.call('ZADD', key .. ':' .. jobtype, unpack(typed)) end
  count_archived(h, state, #scored / 2)
  due_add(h.due .. state, first, queue)
end
