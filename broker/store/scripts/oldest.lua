-- oldest: the payloads of the jobs that may have waited longest in a queue (QUEUE LATENCY):
-- the first of the list (priority 5) and the first to arrive among the other priorities;
-- read-only.
-- KEYS: 1 queue list, 2 jobs hash, 3 prioritized zset
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
return found
