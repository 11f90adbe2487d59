-- push: store new jobs of one queue and enqueue or schedule each of them, atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 scheduled zset, 4 jid index, 5 due:scheduled, 6 queues set
-- ARGV: 1 pushed channel, 2 queue name, then triples (jid, payload, at); at '' = enqueue now.
-- Returns one result per job: 1 stored, 0 refused because its jid names a live job (in any
-- queue); a refused job changes nothing.
-- Guarantees: a stored job's record, its jid index entry and its place in the queue or the
-- schedule appear together; a scheduled job's queue is in the due index no later than it is
-- due; an enqueued job's queue is listed. Publishes the queue name when the queue goes from
-- empty to non-empty, so FETCHes waiting on other broker processes wake up.
local queue = ARGV[2]
local results, woke, listed, earliest = {}, false, false, nil
for i = 3, #ARGV, 3 do
  local jid, at = ARGV[i], ARGV[i + 2]
  if redis.call('HSETNX', KEYS[4], jid, queue) == 0 then
    results[#results + 1] = 0
  else
    redis.call('HSET', KEYS[1], jid, ARGV[i + 1])
    if at == '' then
      if redis.call('LPUSH', KEYS[2], jid) == 1 then woke = true end
      listed = true
    else
      redis.call('ZADD', KEYS[3], at, jid)
      if not earliest or tonumber(at) < tonumber(earliest) then earliest = at end
    end
    results[#results + 1] = 1
  end
end
if listed then redis.call('SADD', KEYS[6], queue) end
if earliest then redis.call('ZADD', KEYS[5], 'LT', earliest, queue) end
if woke then redis.call('PUBLISH', ARGV[1], queue) end
return results
