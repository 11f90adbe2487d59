-- lib_outbox: how a queue's script writes the global keys (hash tag {g}), first in the function
-- library (store/base.py). On one Redis it writes them at once, in the same atomic call. In
-- split mode (a Redis Cluster, where {g} lives in another slot, maybe on another node) the call
-- runs as its `_s` function: it writes only its queue's keys, each global key reaches it as a
-- stand-in in the queue's slot (`hopper:q:{<queue>}:@<global key>`, keys.py: stand_in(), never
-- read or written), and its global writes go to the outbox, which the call returns after its
-- reply and the store applies next, on {g}, with apply.lua (docs/cluster.md says in which order
-- and what a crash between the two steps leaves).

local split = false  -- this call runs in split mode
local outbox = {}  -- split mode: the global writes of this call, one JSON array each
local AFTER = {}  -- name -> a helper a split call defers (filled where each is defined)
local visit = {}  -- apply.lua: what a visit read of due entries before its call, by due key
local prior = {}  -- split mode: what the store read of global keys before the call (read_global)

local function begin_outbox(mode)
  split = mode
  outbox = {}
  prior = {}
end

-- The global key a stand-in names (any other key as it is).
local function real_key(key)
  return string.match(key, '^hopper:q:{[^}]*}:@(.*)$') or key
end

-- Run AFTER[name] (a helper that writes global keys; its first `nkeys` arguments are keys) now,
-- or in split mode add it to the outbox, its keys named as they really are (numbers written as
-- Redis writes them, all 17 digits: cjson keeps 14).
local function defer(name, nkeys, ...)
  if not split then return AFTER[name](...) end
  local entry = {name, ...}
  for i = 2, select('#', ...) + 1 do
    local value = entry[i]
    if i <= nkeys + 1 then
      entry[i] = real_key(value)
    elseif type(value) == 'number' then
      entry[i] = string.format('%.17g', value)
    end
  end
  outbox[#outbox + 1] = cjson.encode(entry)
end

AFTER.call = function(key, command, ...) return redis.call(command, key, ...) end

-- One command on a global key: now, or in split mode after the call.
local function global(command, key, ...)
  return defer('call', 1, key, command, ...)
end

-- A queue's entry in the due index `due`: at or before `score`. In split mode it is made after
-- the call, and the entry's touch count (`<due>:touched`) goes up, so that a loop's visit that
-- read the entry before never makes it later than this (settle_due in lib.lua).
AFTER.due_add = function(due, score, queue)
  redis.call('ZADD', due, 'LT', score, queue)
  redis.call('HINCRBY', due .. ':touched', queue, 1)
end

local function due_add(due, score, queue)
  if split then return defer('due_add', 1, due, score, queue) end
  redis.call('ZADD', due, 'LT', score, queue)
end

-- The reply of the `i`th read of a global key a script makes: read now on one Redis; in split
-- mode read by the store just before the call and passed in (`reads`: a JSON array of the
-- replies, false for none, given to begin_reads; Redis.read_first() in base.py). A script that
-- decides from such a read writes only what stays right if it changed meanwhile (ZADD LT,
-- SADD, index_swap).
local function begin_reads(reads)
  if split and reads ~= '' then prior = cjson.decode(reads) end
end

local function read_global(i, command, key, ...)
  if split then return prior[i] end
  return redis.call(command, key, ...)
end

-- The jid index entry of `jid` becomes `value` ('' : none), while it is still `expected` (''
-- : none). Returns 1 when it did.
AFTER.index_swap = function(index, jid, expected, value)
  if (redis.call('HGET', index, jid) or '') ~= expected then return 0 end
  if value == '' then
    redis.call('HDEL', index, jid)
  else
    redis.call('HSET', index, jid, value)
  end
  return 1
end

local function index_swap(index, jid, expected, value)
  return defer('index_swap', 1, index, jid, expected or '', value)
end

-- apply.lua: the deferred writes of a split call, in the order they were made; `read`: JSON
-- {due key: [score, touched]} of the due entries a visit read before the call ('' each for
-- none: see settle_due in lib.lua), or '' when the call was no visit.
-- Returns what the last entry's helper returned (0 for nothing).
local function apply_outbox(read, entries)
  visit = read ~= '' and cjson.decode(read) or {}
  local result = 0
  for _, text in ipairs(entries) do
    local entry = cjson.decode(text)
    result = AFTER[entry[1]](unpack(entry, 2)) or 0
  end
  return result
end
