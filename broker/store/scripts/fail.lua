-- fail: end a reservation as a failure (FAIL, expiry found by the reaper, fetch Discard).
-- KEYS: 1 jobs hash, 2 working zset, 3 retries zset, 4 dead zset, 5 jid index, 6 stats hash,
--       7 due:retries, 8 due:dead
-- ARGV: 1 queue name, 2 jid, 3 the reservation's expiry as the caller read it ('' = any),
--       4 day, 5 target 'retries' | 'dead' | '' (drop the job), 6 score in the target set,
--       7 the new payload (with its failure)
-- Returns 1 when this call ended the reservation, 0 when there is none, -1 when it is not the
-- one the caller read (extended, or ended and made again since): the caller computed the new
-- payload from what it read, so it must read again. Only the caller that got 1 owns the job's
-- next step, so two reapers never move one job twice and no stale copy is ever written back.
local jid = ARGV[2]
local expiry = redis.call('ZSCORE', KEYS[2], jid)
if not expiry then return 0 end
if ARGV[3] ~= '' and tonumber(expiry) ~= tonumber(ARGV[3]) then return -1 end
redis.call('ZREM', KEYS[2], jid)
redis.call('HINCRBY', KEYS[6], 'processed', 1)
redis.call('HINCRBY', KEYS[6], 'processed:' .. ARGV[4], 1)
redis.call('HINCRBY', KEYS[6], 'failures', 1)
redis.call('HINCRBY', KEYS[6], 'failures:' .. ARGV[4], 1)
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[1], jid)
  forget(KEYS[5], jid, ARGV[1])
else
  local set, due = KEYS[3], KEYS[7]
  if ARGV[5] == 'dead' then set, due = KEYS[4], KEYS[8] end
  redis.call('HSET', KEYS[1], jid, ARGV[7])
  redis.call('ZADD', set, ARGV[6], jid)
  redis.call('ZADD', due, 'LT', ARGV[6], ARGV[1])
end
return 1
