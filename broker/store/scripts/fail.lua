-- fail: end a reservation as a failure (FAIL, or expiry found by the reaper), atomically.
-- KEYS: 1 jobs hash, 2 working zset, 3 stats hash, 4 retries zset, 5 dead zset
-- ARGV: 1 jid, 2 day, 3 new payload (with its failure), 4 target 'retries' | 'dead' | '' (drop),
--       5 score in the target set, 6 latest expiry that may be reaped ('' = any: a FAIL)
-- Returns 1 when this call ended the reservation, 0 when it was already gone (or, for the
-- reaper, has been extended past ARGV[6]); only the caller that got 1 owns the job's next step,
-- so two reapers never move one job twice.
local jid = ARGV[1]
if ARGV[6] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[2], jid)
  if not expiry or tonumber(expiry) > tonumber(ARGV[6]) then return 0 end
end
if redis.call('ZREM', KEYS[2], jid) == 0 then return 0 end
redis.call('HINCRBY', KEYS[3], 'processed', 1)
redis.call('HINCRBY', KEYS[3], 'processed:' .. ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], 'failures', 1)
redis.call('HINCRBY', KEYS[3], 'failures:' .. ARGV[2], 1)
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], jid)
else
  redis.call('HSET', KEYS[1], jid, ARGV[3])
  redis.call('ZADD', ARGV[4] == 'retries' and KEYS[4] or KEYS[5], ARGV[5], jid)
end
return 1
