-- inspect: look at one jid of one queue in a single atomic step and, when asked, repair what
-- is wrong with it (hopper check). Safe on a live store: it acts only on what it sees itself
-- (in split mode its global entries as read just before the call: read_global in lib_outbox.lua).
-- KEYS: 1 jobs hash, 2 queue list, 3 working, 4 scheduled, 5 retries, 6 dead, 7 jid index,
--       8 queues set, 9-12 due:working, due:scheduled, due:retries, due:dead, 13 finished,
--       14 due:finished, 15 prioritized zset, 16 meta hash (a waiting job of a priority other
--       than 5 waits in the prioritized zset, one of a group or of a held back jobtype in its
--       lane: either counts as being in the queue), 17 blocked zset (jobs waiting for their
--       dependencies, lib_workflows.lua: a place too), 18 holders hash
-- ARGV: 1 queue name, 2 jid, 3 '1' to repair, 4 pushed channel, 5 split mode: the reads of the
--       jid's index entry and of the queue's entries in KEYS 9-12 and 14 (read_global), else ''
-- Returns the problems seen, each {kind, detail}:
--   'no record'    places hold the jid but there is no record: the entries are dropped (a
--                  reservation's lane slots given back)
--   'no place'     a record in no list or set: the job is enqueued again (it may run twice,
--                  never zero times)
--   'two places'   the jid is in several places (or listed twice): it keeps the most advanced
--                  one (working, queue, retries, scheduled, dead, finished, in that order)
--   'stale index'  no record here, yet the jid index names this queue: the entry is dropped
--   'no index'     a live record without a jid index entry: one is made
--   'index says finished' / 'index says live': the entry is made to say what the record is
--   'index elsewhere' a live record whose index entry names another queue (detail): left to
--                  the caller
--   'not due'      a set entry whose queue is missing from (or late in) the due index: fixed
local queue, jid, fix = ARGV[1], ARGV[2], ARGV[3] == '1'
begin_reads(ARGV[5])
local DUE_READ = {[9] = 2, [10] = 3, [11] = 4, [12] = 5, [14] = 6}  -- due key -> its read
local finished_mark = '~' .. queue
local problems = {}
local function problem(kind, detail) problems[#problems + 1] = {kind, detail or ''} end
local listed = redis.call('LPOS', KEYS[2], jid, 'COUNT', 0)
local ranked = redis.call('ZSCORE', KEYS[15], jid)
if ranked then listed[#listed + 1] = -1 end
local l = lanes_of(KEYS[16])
local lanes = {}  -- the lanes it waits in: its own (by its record), or without one any lane
local payload = redis.call('HGET', KEYS[1], jid)
if redis.call('HGET', KEYS[16], 'lanes') then
  local ids = payload and lane_ids(payload) or redis.call('ZRANGE', l.ring, 0, -1)
  if not payload then
    for _, id in ipairs(redis.call('ZRANGE', l.resting, 0, -1)) do ids[#ids + 1] = id end
  end
  for _, id in ipairs(ids) do
    if redis.call('ZSCORE', l.lane .. id, jid) then
      lanes[#lanes + 1] = id
      ranked = true
      listed[#listed + 1] = -2
    end
  end
end
local held = {}  -- {kind, key, due key, score}, most advanced first
local order = {{'working', 3, 9}, {'queue', 2}, {'retries', 5, 11}, {'scheduled', 4, 10},
  {'blocked', 17}, {'dead', 6, 12}, {'finished', 13, 14}}
for _, place in ipairs(order) do
  if place[1] == 'queue' then
    if #listed > 0 then held[#held + 1] = place end
  else
    local score = redis.call('ZSCORE', KEYS[place[2]], jid)
    if score then held[#held + 1] = {place[1], place[2], place[3], score} end
  end
end
local owner = read_global(1, 'HGET', KEYS[7], jid)
if redis.call('HEXISTS', KEYS[1], jid) == 0 then
  if #held > 0 then
    problem('no record', held[1][1])
    if fix then
      redis.call('LREM', KEYS[2], 0, jid)
      for _, id in ipairs(lanes) do exit_lane(l, id, jid) end
      if held[1][1] == 'working' then  -- its holder goes, its lanes' slots come back
        redis.call('HDEL', KEYS[18], jid)
        unlease(KEYS[16], {jid})
      end
      for _, i in ipairs({3, 4, 5, 6, 13, 15, 17}) do redis.call('ZREM', KEYS[i], jid) end
    end
  end
  if owner == queue or owner == finished_mark then
    problem('stale index')
    if fix then index_swap(KEYS[7], jid, owner, '') end
  end
  return problems
end
if #held == 0 then
  problem('no place')
  if fix then
    if line_up(KEYS[2], KEYS[15], KEYS[16], {jid}, {payload}) then  -- in its lane, if any
      global('PUBLISH', ARGV[4], queue)
    end
    global('SADD', KEYS[8], queue)
    held = {{'queue', 2}}
  end
elseif #held > 1 or #listed > 1 then
  local names = {}
  for _, place in ipairs(held) do names[#names + 1] = place[1] end
  problem('two places', table.concat(names, ','))
  if fix then
    local keep = held[1]
    if keep[1] == 'queue' and #lanes > 0 then  -- it keeps its place in its first lane
      redis.call('LREM', KEYS[2], 0, jid)
      redis.call('ZREM', KEYS[15], jid)
      for i = 2, #lanes do exit_lane(l, lanes[i], jid) end
    elseif keep[1] == 'queue' and ranked then  -- it keeps its place among its priority
      redis.call('LREM', KEYS[2], 0, jid)
    elseif keep[1] == 'queue' then
      if #listed > 1 then redis.call('LREM', KEYS[2], #listed - 1, jid) end
    else
      redis.call('LREM', KEYS[2], 0, jid)
      redis.call('ZREM', KEYS[15], jid)
      for _, id in ipairs(lanes) do exit_lane(l, id, jid) end
    end
    for i = 2, #held do
      if held[i][1] ~= 'queue' then redis.call('ZREM', KEYS[held[i][2]], jid) end
    end
  end
end
local first = held[1]
if first and first[1] ~= 'queue' and first[3] then
  local due = read_global(DUE_READ[first[3]], 'ZSCORE', KEYS[first[3]], queue)
  if not due or tonumber(due) > tonumber(first[4]) then
    problem('not due', first[1])
    if fix then due_add(KEYS[first[3]], first[4], queue) end
  end
end
if first and first[1] == 'finished' then
  if owner == queue then
    problem('index says live')
    if fix then index_swap(KEYS[7], jid, owner, finished_mark) end
  end
elseif not owner then
  problem('no index')
  if fix then index_swap(KEYS[7], jid, '', queue) end
elseif owner == finished_mark then
  problem('index says finished')
  if fix then index_swap(KEYS[7], jid, owner, queue) end
elseif owner ~= queue then
  problem('index elsewhere', owner)
end
return problems
