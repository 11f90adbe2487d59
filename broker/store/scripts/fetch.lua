-- fetch: reserve the oldest job of one queue for a worker, atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 working zset, 4 owners hash, 5 paused flag
-- ARGV: 1 now, 2 default reservation, 3 minimum, 4 maximum (seconds), 5 wid
-- Returns {jid, payload}, or false when the queue is paused or empty.
-- Guarantees: the job leaves the queue and enters the working set in one step, with expiry
-- now + its reserve_for (clamped to [min, max]; 0 means the default). The stored payload starts
-- with {"reserve_for":N when the job has its own reservation (see broker/jobs.py), so no JSON
-- is decoded here. A queued jid without a record (never written by Hopper itself) is skipped.
if redis.call('EXISTS', KEYS[5]) == 1 then return false end
for _ = 1, 100 do
  local jid = redis.call('RPOP', KEYS[2])
  if not jid then return false end
  local payload = redis.call('HGET', KEYS[1], jid)
  if payload then
    local seconds = tonumber(string.match(payload, '^{"reserve_for":(%d+)')) or 0
    if seconds <= 0 then seconds = tonumber(ARGV[2]) end
    seconds = math.min(math.max(seconds, tonumber(ARGV[3])), tonumber(ARGV[4]))
    redis.call('ZADD', KEYS[3], tonumber(ARGV[1]) + seconds, jid)
    redis.call('HSET', KEYS[4], jid, ARGV[5])
    return {jid, payload}
  end
end
return false
