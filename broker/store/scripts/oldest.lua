-- oldest: the payloads of the jobs that may have waited longest in a queue (QUEUE LATENCY):
-- the first of the list (priority 5), the first to arrive among the other priorities, and
-- the first to arrive among the heads of the lanes (of the first LANES_SEEN served and
-- resting: with more lanes, an estimate); read-only.
-- KEYS: 1 queue list, 2 jobs hash, 3 prioritized zset, 4 meta hash
-- Returns up to two payloads (the caller compares their enqueued_at); empty when none waits.
local found = {}
local jid = redis.call('LINDEX', KEYS[1], -1)
if jid then found[#found + 1] = redis.call('HGET', KEYS[2], jid) end
local first, arrival = nil, nil
for priority = 1, 9 do  -- the first of each priority; the smallest arrival came first
  if priority ~= 5 then
    local low = (10 - priority) * PRIORITY_STEP
    local head = redis.call('ZRANGEBYSCORE', KEYS[3], low, '(' .. (low + PRIORITY_STEP),
      'WITHSCORES', 'LIMIT', 0, 1)
    if head[1] and (not arrival or tonumber(head[2]) - low < arrival) then
      first, arrival = head[1], tonumber(head[2]) - low
    end
  end
end
if first then found[#found + 1] = redis.call('HGET', KEYS[2], first) end
local LANES_SEEN = 100
first, arrival = nil, nil
local l = lanes_of(KEYS[4])
for _, set in ipairs({l.ring, l.resting}) do
  for _, lane in ipairs(redis.call('ZRANGE', set, 0, LANES_SEEN - 1)) do
    local head = redis.call('ZRANGE', l.lane .. lane, 0, 0, 'WITHSCORES')
    if head[1] and (not arrival or tonumber(head[2]) % PRIORITY_STEP < arrival) then
      first, arrival = head[1], tonumber(head[2]) % PRIORITY_STEP
    end
  end
end
if first then found[#found + 1] = redis.call('HGET', KEYS[2], first) end
return found
