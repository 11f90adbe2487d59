-- queue_check: a queue's entries in the due index and the list of queues, checked and (when
-- asked) repaired atomically (hopper check).
-- KEYS: 1 queue list, 2 queues set, 3-7 working, scheduled, retries, dead, finished,
--       8-12 due:working, due:scheduled, due:retries, due:dead, due:finished, 13 prioritized,
--       14 meta hash (its lanes' keys are named from it, see lanes_of() in lib_lanes.lua)
-- ARGV: 1 queue name, 2 '1' to repair, 3 split mode: the reads of the queue's membership of
--       KEYS[2] and of its entries in KEYS 8-12 (read_global), else '', then the ids of the
--       lane keys a SCAN found
-- Returns the problems: {'not listed', ''} for waiting jobs in a queue INFO does not list,
-- {'not due', <set>} for a set whose earliest entry is earlier than the queue's due time;
-- for lanes: {'empty lane', id} (listed as served or resting, holding nothing: dropped),
-- {'lane twice', id} (both served and resting: it rests), {'lane count', '<noted> <held>'}
-- (the count of jobs in lanes is wrong: set right), {'stale lease', jid} (a lease of a job
-- not reserved: dropped), {'running count', id} (a lane's running count is not the number
-- of its leases: set right), {'stranded lane', id} (a lane key with jobs listed neither as
-- served nor resting: it takes its turn).
local queue, fix = ARGV[1], ARGV[2] == '1'
begin_reads(ARGV[3])
local names = {'working', 'scheduled', 'retries', 'dead', 'finished'}
local problems = {}
local waiting = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[13])
  + (tonumber(redis.call('HGET', KEYS[14], 'laned')) or 0)
if waiting > 0 and read_global(1, 'SISMEMBER', KEYS[2], queue) == 0 then
  problems[#problems + 1] = {'not listed', ''}
  if fix then global('SADD', KEYS[2], queue) end
end
for i = 3, 7 do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[1] then
    local due = read_global(i - 1, 'ZSCORE', KEYS[i + 5], queue)
    if not due or tonumber(due) > tonumber(first[2]) then
      problems[#problems + 1] = {'not due', names[i - 2]}
      if fix then due_add(KEYS[i + 5], first[2], queue) end
    end
  end
end
local l = lanes_of(KEYS[14])
for i = 4, #ARGV do
  local lane = ARGV[i]
  if not redis.call('ZSCORE', l.ring, lane) and not redis.call('ZSCORE', l.resting, lane)
    and redis.call('EXISTS', l.lane .. lane) == 1 then
    problems[#problems + 1] = {'stranded lane', lane}
    if fix then
      redis.call('ZADD', l.ring, redis.call('HINCRBY', KEYS[14], 'turn', 1), lane)
      redis.call('HSET', KEYS[14], 'lanes', 1)
    end
  end
end
local held = 0
for _, set in ipairs({l.resting, l.ring}) do
  for _, lane in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    local n = redis.call('ZCARD', l.lane .. lane)
    if n == 0 then
      problems[#problems + 1] = {'empty lane', lane}
      if fix then redis.call('ZREM', set, lane) end
    elseif set == l.ring and redis.call('ZSCORE', l.resting, lane) then
      problems[#problems + 1] = {'lane twice', lane}
      if fix then redis.call('ZREM', set, lane) end
    else
      held = held + n
    end
  end
end
local noted = tonumber(redis.call('HGET', KEYS[14], 'laned')) or 0
if noted ~= held then
  problems[#problems + 1] = {'lane count', noted .. ' ' .. held}
  if fix then redis.call('HSET', KEYS[14], 'laned', held) end
end
local counts = {}
local leases = redis.call('HGETALL', l.leases)
for i = 1, #leases, 2 do
  if not redis.call('ZSCORE', KEYS[3], leases[i]) then
    problems[#problems + 1] = {'stale lease', leases[i]}
    if fix then unlease(KEYS[14], {leases[i]}) end
  else
    for _, lane in ipairs(cjson.decode(leases[i + 1])) do counts[lane] = (counts[lane] or 0) + 1 end
  end
end
local running = redis.call('HGETALL', l.running)
for i = 1, #running, 2 do
  if tonumber(running[i + 1]) ~= (counts[running[i]] or 0) then
    problems[#problems + 1] = {'running count', running[i]}
    if fix then redis.call('HSET', l.running, running[i], counts[running[i]] or 0) end
  end
  counts[running[i]] = nil
end
for lane, n in pairs(counts) do
  problems[#problems + 1] = {'running count', lane}
  if fix then redis.call('HSET', l.running, lane, n) end
end
return problems
