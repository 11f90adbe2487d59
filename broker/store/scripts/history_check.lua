-- history_check: look at archived jobs of one queue atomically (`hopper check`), and with
-- repair mend them.
-- KEYS: 1 jobs hash, 2 jid index (both only to name the history keys: history_keys()), 3 the
--       index zset being walked ('entries' mode: the history hash)
-- ARGV: 1 '1' to repair, 2 mode: 'entries' (jids of the history hash) or 'index' (jids of the
--       zset KEYS[3], of state ARGV[3] and jobtype ARGV[4], '' for the state's own zset), then
--       from 5 the jids; or 'counts', 3 the queue key prefix (keys.py), then the queues the
--       caller found with archived jobs; or 'due', 3 the state of KEYS[3] (the state's own
--       zset), 4 its queue, 5 split mode: the read of its due entry (read_global), else '':
--       the queue's due entry is no later than that zset's oldest entry
-- Returns a list of problems ({kind, jid or detail} flattened), empty when sound. Checks: an
-- entry is in both its indexes (repair: added, at its time); an index entry has its entry, of
-- that state (and jobtype) (repair: removed); counts: each state's count is what the state
-- indexes of those queues and of every queue in its due index hold (repair: set to it).
local repair, mode = ARGV[1] == '1', ARGV[2]
local h = history_keys(KEYS[1], KEYS[2])
local found = {}
local function problem(kind, jid)
  found[#found + 1] = kind
  found[#found + 1] = jid
end
if mode == 'counts' then
  for _, state in ipairs(FINAL_STATES) do
    local queues, held = {}, 0
    for i = 4, #ARGV do queues[ARGV[i]] = true end
    for _, q in ipairs(redis.call('ZRANGE', h.due .. state, 0, -1)) do queues[q] = true end
    for q in pairs(queues) do
      held = held + redis.call('ZCARD', ARGV[3] .. '{' .. q .. '}:ended:' .. state)
    end
    local says = tonumber(redis.call('HGET', h.count, state) or 0)
    if says ~= held then
      problem('history count wrong', state .. ': says ' .. says .. ', holds ' .. held)
      if repair then redis.call('HSET', h.count, state, held) end
    end
  end
  return found
end
if mode == 'due' then  -- read with the oldest entry, in one step: a purge moves both
  begin_reads(ARGV[5])
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local due = read_global(1, 'ZSCORE', h.due .. ARGV[3], ARGV[4])
  if oldest[1] and (not due or tonumber(due) > tonumber(oldest[2])) then
    problem('history due entry missing', ARGV[3])
    if repair then due_add(h.due .. ARGV[3], oldest[2], ARGV[4]) end
  end
  return found
end
for i = 5, #ARGV do
  local jid = ARGV[i]
  local entry = redis.call('HGET', h.history, jid)
  if mode == 'entries' and entry then
    local state = string.match(entry, '^{"state":"(%a+)"')
    local at = string.match(entry, '^{"state":"%a+","at":([%d%.]+),')
    if state and at then
      for _, key in ipairs({h.ended .. state, h.ended .. state .. ':' .. jobtype_of(entry)}) do
        if not redis.call('ZSCORE', key, jid) then
          problem('history entry not indexed', jid)
          if repair then redis.call('ZADD', key, at, jid) end
        end
      end
    else
      problem('history entry unreadable', jid)
    end
  elseif mode == 'index' then
    local state = entry and string.match(entry, '^{"state":"(%a+)"')
    local fits = state == ARGV[3] and (ARGV[4] == '' or jobtype_of(entry) == ARGV[4])
    if not fits and redis.call('ZSCORE', KEYS[3], jid) then
      problem('history index entry without entry', jid)
      if repair then redis.call('ZREM', KEYS[3], jid) end
    end
  end
end
return found
