-- lib_lanes: helpers for priorities and lanes, in the function library after lib.lua (see
-- store/base.py).

-- Priorities: a waiting job of priority 5 (the default) is in the queue list; one of another
-- priority (1-9, higher first) is in the queue's prioritized zset, scored so that ZPOPMIN
-- gives the highest priority first and, within it, the first to arrive.
local PRIORITY_STEP = 1099511627776  -- 2^40 arrivals per priority
local HIGH = 5 * PRIORITY_STEP  -- scores below this are priorities 6-9

-- A stored payload's priority (nil: the default) and group (nil: none). They follow
-- `enqueued_at` and `reserve_for` in the payload (see client/schema/jobs.py), so only its
-- first bytes are read; a group holds no quote, backslash or control character
-- (broker/policy.py).
local function head_of(payload)
  local _, e = string.find(payload, '^{"enqueued_at":"[^"]*",')
  local pos = (e or 1) + 1
  local _, r = string.find(payload, '^"reserve_for":%-?%d+,', pos)
  if r then pos = r + 1 end
  local priority = tonumber(string.match(payload, '^"priority":(%d),', pos))
  if priority then pos = pos + 13 end
  return priority, string.match(payload, '^"group":"([^"]*)"', pos)
end

-- Lanes: a waiting job of a group (per tenant, per customer) waits in its group's lane, and a
-- job held back by its jobtype's limits in its jobtype's lane, not in the list. A lane is a
-- zset of jids scored like prioritized; `lanes` lists those that may be served now, scored by
-- their turn (round-robin: a served lane goes to the back), `resting` those held back by their
-- limits, scored by when to look again. `running` counts the reservations of each lane that
-- has a concurrency limit, `leases` says which lanes a reserved job counts towards (JSON),
-- `buckets` holds each rate-limited lane's tokens until they are full again (`refills`: when).
-- Lane ids: 'g:<group>', 't:<jobtype>'.
-- Their keys share the queue's hash tag and are named from its meta key (keys.py).
local function lanes_of(meta)
  local base = string.sub(meta, 1, -5)
  return {meta = meta, lane = base .. 'lane:', ring = base .. 'lanes', resting = base .. 'resting',
    running = base .. 'running', leases = base .. 'leases', buckets = base .. 'buckets',
    refills = base .. 'refills'}
end

-- A job joins `lane` (l from lanes_of) with `score`; a lane that does not rest takes its turn
-- (a new one at the back).
local function enter_lane(l, lane, score, jid)
  redis.call('ZADD', l.lane .. lane, score, jid)
  if not redis.call('ZSCORE', l.resting, lane) and not redis.call('ZSCORE', l.ring, lane) then
    redis.call('ZADD', l.ring, redis.call('HINCRBY', l.meta, 'turn', 1), lane)
  end
  redis.call('HSET', l.meta, 'lanes', 1)
  redis.call('HINCRBY', l.meta, 'laned', 1)
end

-- A job leaves `lane`; a lane left empty leaves the ring (or rest). 1 if it was there.
local function exit_lane(l, lane, jid)
  local key = l.lane .. lane
  if redis.call('ZREM', key, jid) == 0 then return 0 end
  redis.call('HINCRBY', l.meta, 'laned', -1)
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', l.ring, lane)
    redis.call('ZREM', l.resting, lane)
  end
  return 1
end

-- Reservations that end (jids of one queue) give back their lanes' slots; a lane resting at
-- its limits takes its turn again (FETCH looks at it anew).
local function unlease(meta, jids)
  if #jids == 0 then return end
  local l = lanes_of(meta)
  local held = redis.call('HMGET', l.leases, unpack(jids))
  local gone = {}
  for i, value in ipairs(held) do
    if value then
      gone[#gone + 1] = jids[i]
      for _, lane in ipairs(cjson.decode(value)) do
        if redis.call('HINCRBY', l.running, lane, -1) <= 0 then redis.call('HDEL', l.running, lane) end
        if redis.call('ZREM', l.resting, lane) == 1 then
          redis.call('ZADD', l.ring, redis.call('HINCRBY', meta, 'turn', 1), lane)
        end
      end
    end
  end
  if #gone > 0 then redis.call('HDEL', l.leases, unpack(gone)) end
end

-- Take up to `most` waiting jobs out of the lanes of the queue whose meta hash is `meta`
-- (QUEUE REMOVE, FLUSH): their jids.
local function empty_lanes(meta, most)
  local l = lanes_of(meta)
  local jids = {}
  for _, set in ipairs({l.ring, l.resting}) do
    while #jids < most do
      local lane = redis.call('ZRANGE', set, 0, 0)[1]
      if not lane then break end
      local popped = redis.call('ZPOPMIN', l.lane .. lane, most - #jids)
      for i = 1, #popped, 2 do jids[#jids + 1] = popped[i] end
      if redis.call('EXISTS', l.lane .. lane) == 0 then redis.call('ZREM', set, lane) end
    end
  end
  if #jids > 0 then redis.call('HINCRBY', meta, 'laned', -#jids) end
  return jids
end

-- Put waiting jobs in line (jids, with their payloads): the default ones pushed on `list`
-- (LPUSH: FIFO with RPOP), those of a group in its lane, the others into `ranked` after those
-- of their priority (`meta` counts arrivals and notes that the zset may hold jobs). Returns
-- true when the queue must be listed and its FETCHes woken: the list was empty, or other jobs
-- came.
local function line_up(list, ranked, meta, jids, payloads)
  local plain, scored, grouped = {}, {}, {}
  for i, jid in ipairs(jids) do
    local priority, group = head_of(payloads[i])
    if group then
      grouped[#grouped + 1] = {jid, priority or 5, 'g:' .. group}
    elseif priority then
      scored[#scored + 1] = priority
      scored[#scored + 1] = jid
    else
      plain[#plain + 1] = jid
    end
  end
  local notify = false
  if #plain > 0 then notify = redis.call('LPUSH', list, unpack(plain)) == #plain end
  local count = #scored / 2 + #grouped
  if count > 0 then
    local arrival = redis.call('HINCRBY', meta, 'arrivals', count) - count
    for i = 1, #scored, 2 do
      arrival = arrival + 1
      scored[i] = (10 - scored[i]) * PRIORITY_STEP + arrival
    end
    if #scored > 0 then
      redis.call('ZADD', ranked, unpack(scored))
      redis.call('HSET', meta, 'prioritized', 1)
    end
    local l = #grouped > 0 and lanes_of(meta)
    for _, entry in ipairs(grouped) do
      arrival = arrival + 1
      enter_lane(l, entry[3], (10 - entry[2]) * PRIORITY_STEP + arrival, entry[1])
    end
    notify = true
  end
  return notify
end

-- The lanes a waiting job (its payload) may wait in: its group's, then its jobtype's.
local function lane_ids(payload)
  local _, group = head_of(payload)
  local ids = {'t:' .. jobtype_of(payload)}
  if group then table.insert(ids, 1, 'g:' .. group) end
  return ids
end

-- Take a waiting job out of line, wherever it waits (its payload names its lane); 1 if it was
-- waiting.
local function leave_line(list, ranked, meta, jid, payload)
  if redis.call('ZREM', ranked, jid) == 1 then return 1 end
  if redis.call('LREM', list, -1, jid) == 1 then return 1 end
  if not payload or not redis.call('HGET', meta, 'lanes') then return 0 end
  local l = lanes_of(meta)
  for _, id in ipairs(lane_ids(payload)) do
    if exit_lane(l, id, jid) == 1 then return 1 end
  end
  return 0
end
