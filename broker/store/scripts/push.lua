-- push: store new jobs of one queue and enqueue or schedule each of them, atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 scheduled zset, 4 jid index, 5 due:scheduled, 6 queues set,
--       7 finished zset, 8 final hash, 9 progress hash
-- ARGV: 1 pushed channel, 2 queue name, then triples (jid, payload, at); at '' = enqueue now.
-- Returns one result per job: 1 stored, 0 refused because its jid names a live job (in any
-- queue, or earlier in this call); a refused job changes nothing. The jid of a finished job
-- (index entry ~queue) is free: the new job takes the index entry, and a finished job of this
-- queue with that jid is forgotten.
-- Guarantees: a stored job's record, its jid index entry and its place in the queue or the
-- schedule appear together; a scheduled job's queue is in the due index no later than it is
-- due; an enqueued job's queue is listed. Publishes the queue name when the queue goes from
-- empty to non-empty, so FETCHes waiting on other broker processes wake up; events: pushed,
-- scheduled. Each kind of write
-- is one call for the whole batch.
local queue = ARGV[2]
local count = (#ARGV - 2) / 3
local jids = {}
for i = 1, count do jids[i] = ARGV[3 * i] end
local owners = redis.call('HMGET', KEYS[4], unpack(jids))
local results, taken = {}, {}
local index, records, waiting, scheduled = {}, {}, {}, {}
local earliest = nil
for i = 1, count do
  local jid, at = ARGV[3 * i], ARGV[3 * i + 2]
  local owner = owners[i]
  if (owner and string.sub(owner, 1, 1) ~= '~') or taken[jid] then
    results[i] = 0
  else
    taken[jid] = true
    results[i] = 1
    index[#index + 1] = jid
    index[#index + 1] = queue
    records[#records + 1] = jid
    records[#records + 1] = ARGV[3 * i + 1]
    if at == '' then
      waiting[#waiting + 1] = jid
    else
      scheduled[#scheduled + 1] = at
      scheduled[#scheduled + 1] = jid
      if not earliest or tonumber(at) < tonumber(earliest) then earliest = at end
    end
  end
end
if #index == 0 then return results end
local stored = {}
for i = 1, #records, 2 do stored[#stored + 1] = records[i] end
local finished = redis.call('ZMSCORE', KEYS[7], unpack(stored))
local old = {}
for i, jid in ipairs(stored) do
  if finished[i] then old[#old + 1] = jid end
end
if #old > 0 then
  redis.call('ZREM', KEYS[7], unpack(old))
  redis.call('HDEL', KEYS[8], unpack(old))
  redis.call('HDEL', KEYS[9], unpack(old))
end
redis.call('HSET', KEYS[4], unpack(index))
redis.call('HSET', KEYS[1], unpack(records))
if #waiting > 0 and redis.call('LPUSH', KEYS[2], unpack(waiting)) == #waiting then
  -- the queue was empty: list it (a queue with jobs waiting always is) and wake fetchers
  redis.call('SADD', KEYS[6], queue)
  redis.call('PUBLISH', ARGV[1], queue)
end
if earliest then
  redis.call('ZADD', KEYS[3], unpack(scheduled))
  redis.call('ZADD', KEYS[5], 'LT', earliest, queue)
end
if listening() then
  local now, events = clock(), {}
  for i = 1, count do
    if results[i] == 1 then
      local jid, payload, at = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
      if at == '' then
        events[#events + 1] = event('pushed', jid, queue, payload, now, '')
      else
        events[#events + 1] = event('scheduled', jid, queue, payload, now, ',"run_at":' .. at)
      end
    end
  end
  publish(events)
end
return results
