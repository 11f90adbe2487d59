-- lib: helpers shared by every script, with lib_lanes.lua and lib_batches.lua: the three make
-- the top of Hopper's Redis function library, each script one function in it (see
-- store/base.py). They are defined once, when Redis loads the library.

-- The payload with `enqueued_at` set to `text` as its first field. A stored payload keeps
-- `enqueued_at` first whenever it has one (client/schema/jobs.py orders Job's fields so), so
-- the old value, if any, is the prefix replaced here; no JSON is decoded.
local function stamp(payload, text)
  local rest = string.match(payload, '^{"enqueued_at":"[^"]*",(.*)$') or string.sub(payload, 2)
  return '{"enqueued_at":"' .. text .. '",' .. rest
end

-- Whether a jid index entry (or false) names a live job: a queue, not ~queue (a finished one).
local function names_live(owner)
  return owner and string.sub(owner, 1, 1) ~= '~'
end

-- Whether `jid` is a live job of the queue whose `jobs` hash and `finished` zset these are: its
-- record is there and it has not finished (the queue's own answer; the jid index may lag behind
-- it in split mode, docs/cluster.md).
local function live_here(jobs, finished, jid)
  return redis.call('HEXISTS', jobs, jid) == 1 and not redis.call('ZSCORE', finished, jid)
end

-- Whether the string a sorts before b bytewise, as Redis orders members (Lua's own `<` follows
-- the locale).
local function bytes_before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The queue leaves the due index `due` (and its touch count with it, see due_add); in split
-- mode only if nothing was added since the visit read it (settle_due).
local function due_drop(due, queue)
  if split then return defer('settle_due', 1, due, queue, '') end
  redis.call('ZREM', due, queue)
  redis.call('HDEL', due .. ':touched', queue)
end

-- A loop's visit, in split mode: the entry becomes `earliest` ('' : none) only while it and its
-- touch count are still what the visit read before its call (an entry added since, maybe absorbed
-- by an earlier one, must not be lost); else it only goes down to `earliest`, and a later visit
-- makes it exact.
AFTER.settle_due = function(due, queue, earliest)
  local score = redis.call('ZSCORE', due, queue) or ''
  local touched = redis.call('HGET', due .. ':touched', queue) or ''
  local seen = visit[due]
  if not (seen and score == seen[1] and touched == seen[2]) then
    if earliest ~= '' then redis.call('ZADD', due, 'LT', earliest, queue) end
  elseif earliest ~= '' then
    redis.call('ZADD', due, earliest, queue)
  else
    due_drop(due, queue)
  end
end

-- Make `queue`'s entry in the due index `due` exact for the sorted set `set`: the score of its
-- earliest entry, or no entry once the set is empty (split mode: settle_due).
local function refresh_due(due, set, queue)
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if split then return defer('settle_due', 1, due, queue, first[2] or '') end
  if first[1] then
    redis.call('ZADD', due, first[2], queue)
  else
    due_drop(due, queue)
  end
end

-- The entries a script acts on, from args[first] on (args: its ARGV): 'due' <now> <limit>
-- selects those of `set` whose score is <= now; 'all' <limit> the first ones of `set`; 'jids'
-- <jid> <score> ... the given jids, each only while its score in `set` is still the one the caller read (so a caller
-- never acts on an entry that moved and came back). Returns the jids that are in `set` now.
local function pick(set, args, first)
  local mode = args[first]
  if mode == 'due' then
    return redis.call('ZRANGEBYSCORE', set, '-inf', args[first + 1], 'LIMIT', 0, args[first + 2])
  elseif mode == 'all' then
    return redis.call('ZRANGE', set, 0, tonumber(args[first + 1]) - 1)
  end
  local jids = {}
  for i = first + 1, #args, 2 do jids[#jids + 1] = args[i] end
  if #jids == 0 then return jids end
  local scores = redis.call('ZMSCORE', set, unpack(jids))
  local chosen, seen = {}, {}
  for i, jid in ipairs(jids) do
    local read = args[first + 2 * i]
    if scores[i] and tonumber(scores[i]) == tonumber(read) and not seen[jid] then
      seen[jid] = true
      chosen[#chosen + 1] = jid
    end
  end
  return chosen
end

-- Drop the jid index entries of `jids` that still say `value` (the queue for live jobs, or
-- ~queue for finished ones).
AFTER.forget_all = function(index, jids, value)
  local owners = redis.call('HMGET', index, unpack(jids))
  local ours = {}
  for i, jid in ipairs(jids) do
    if owners[i] == value then ours[#ours + 1] = jid end
  end
  if #ours > 0 then redis.call('HDEL', index, unpack(ours)) end
end

local function forget_all(index, jids, value)
  if #jids > 0 then defer('forget_all', 1, index, jids, value) end
end

-- The keep policy every finishing script gets from the broker (Manager.keep): '<n> <mode>',
-- n the finished jobs kept per queue at most (0: none), mode how the history archives them
-- ('' none, 'a' with their args, 'n' without; see archive() in lib_history.lua).
local function keep_policy(keep)
  local most, mode = string.match(keep, '^(%d+) ?(%a?)$')
  return tonumber(most), mode
end

-- Jobs of `queue` finish now, at `at` (unix seconds), in `state`: they are archived (history),
-- their records stay where they are, the finished set holds them (scored by `at`, purged
-- finished_ttl later), and their index entries say ~queue; `notes` (flat {jid, note, ...}) are
-- kept in the final hash for those that have a state other than done, or a result; `extras`
-- (per jid, or nil) are what the archive adds to each entry. With no job kept (keep) records,
-- progress and index entries go now. Beyond the number kept per queue the oldest finished jobs
-- go. KEYS of the caller, in a table: jobs, final, finished, due (of finished), index,
-- progress.
local function finish(k, queue, jids, notes, at, keep, state, extras)
  if #jids == 0 then return end
  local most, mode = keep_policy(keep)
  if mode ~= '' then
    local payloads = redis.call('HMGET', k.jobs, unpack(jids))
    archive(k.jobs, k.index, queue, mode, state, at, jids, payloads, extras)
  end
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
  global('HSET', k.index, unpack(marks))
  due_add(k.due, at, queue)
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

-- The expiry FETCH gave a reservation whose expiry is now `expiry`: the same, unless TRACK
-- extended it (`progress`, the job's progress text, or nil/false, notes it: progress.lua).
local function reservation(progress, expiry)
  local fetched, now = string.match(progress or '', '"reserved":%["([^"]+)","([^"]+)"%]')
  if fetched and tonumber(now) == tonumber(expiry) then return fetched end
  return expiry
end

-- Tell JOB WAITs (on any broker) that these jobs finished or died: publish the awaited ones.
AFTER.announce = function(awaited, channel, jids)
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

local function announce(awaited, channel, jids)
  if #jids > 0 then defer('announce', 1, awaited, channel, jids) end
end

-- FETCH's global writes for a worker's reservations: `entries` (`queue:jid`) join its held set,
-- and a worker no longer registered (forgotten by a broker while this connection, on another,
-- stayed open) enters holding, so its jobs are failed worker_ttl later unless it says HELLO
-- again (worker_join.lua).
AFTER.hold = function(held, workers, holding, wid, now, entries)
  redis.call('SADD', held, unpack(entries))
  if not redis.call('ZSCORE', workers, wid) then redis.call('ZADD', holding, 'NX', now, wid) end
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
-- listens, so that nothing is built when nobody does. PUBSUB NUMSUB counts this node's
-- subscribers only: on a Redis Cluster a listening broker subscribes to the channel on one
-- master (a PUBLISH reaches every node) and holds `hopper:events:gate` on every other one.
local EVENTS, EVENTS_GATE = 'hopper:events', 'hopper:events:gate'

local function listening()
  local counts = redis.call('PUBSUB', 'NUMSUB', EVENTS, EVENTS_GATE)
  return counts[2] + counts[4] > 0
end

-- Redis's clock, for the time of events.
local function clock()
  local now = redis.call('TIME')
  return now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
end

-- One event line; `extra` holds more members as raw JSON (',"k":v') or ''.
local function event(name, jid, queue, payload, at, extra)
  return '{"event":"' .. name .. '","jid":' .. cjson.encode(jid) .. ',"queue":"' .. queue
    .. '","jobtype":' .. cjson.encode(jobtype_of(payload)) .. ',"at":' .. at .. extra .. '}'
end

local function publish(events)
  if #events > 0 then redis.call('PUBLISH', EVENTS, table.concat(events, '\n')) end
end
