-- fail: end a reservation as a failure (FAIL, expiry found by the reaper, fetch Discard).
-- KEYS: 1 jobs hash, 2 working zset, 3 retries zset, 4 dead zset, 5 jid index, 6 stats hash,
--       7 due:retries, 8 due:dead, 9 final hash, 10 finished zset, 11 due:finished,
--       12 progress hash, 13 awaited zset
-- ARGV: 1 queue name, 2 jid, 3 the reservation's expiry as the caller read it ('' = any),
--       4 day, 5 target 'retries' | 'dead' | '' (discard the job), 6 score in the target set,
--       7 the new payload (with its failure), 8 now (unix seconds), 9 finished jobs kept per
--       queue at most (0: none), 10 finished channel
-- Returns 1 when this call ended the reservation, 0 when there is none, -1 when it is not the
-- one the caller read (extended, or ended and made again since): the caller computed the new
-- payload from what it read, so it must read again. Only the caller that got 1 owns the job's
-- next step, so two reapers never move one job twice and no stale copy is ever written back.
-- A discarded job is kept like a done one (see finish() in lib.lua); JOB WAITs hear of
-- discarded and dead jobs.
local queue, jid = ARGV[1], ARGV[2]
local expiry = redis.call('ZSCORE', KEYS[2], jid)
if not expiry then return 0 end
if ARGV[3] ~= '' and tonumber(expiry) ~= tonumber(ARGV[3]) then return -1 end
redis.call('ZREM', KEYS[2], jid)
redis.call('HINCRBY', KEYS[6], 'processed', 1)
redis.call('HINCRBY', KEYS[6], 'processed:' .. ARGV[4], 1)
redis.call('HINCRBY', KEYS[6], 'failures', 1)
redis.call('HINCRBY', KEYS[6], 'failures:' .. ARGV[4], 1)
if ARGV[5] == 'retries' then
  redis.call('HSET', KEYS[1], jid, ARGV[7])
  redis.call('ZADD', KEYS[3], ARGV[6], jid)
  redis.call('ZADD', KEYS[7], 'LT', ARGV[6], queue)
  return 1
end
if ARGV[5] == 'dead' then
  redis.call('HSET', KEYS[1], jid, ARGV[7])
  redis.call('ZADD', KEYS[4], ARGV[6], jid)
  redis.call('ZADD', KEYS[8], 'LT', ARGV[6], queue)
else
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], jid, ARGV[7]) end
  local k = {jobs = KEYS[1], final = KEYS[9], finished = KEYS[10], due = KEYS[11],
    index = KEYS[5], progress = KEYS[12]}
  finish(k, queue, {jid}, {jid, note('discarded', '')}, ARGV[8], ARGV[9])
end
announce(KEYS[13], ARGV[10], {jid})
return 1
