-- expiry_check: the expiries of one queue, checked and (when asked) repaired atomically (hopper
-- check).
-- KEYS: 1 expiring zset, 2 jobs hash, 3 working, 4 dead, 5 finished, 6 meta hash
-- ARGV: 1 jid ('' = check only the queue's note), 2 '1' to repair
-- An expiry belongs to a job that waits to run (queued, scheduled or retrying): one of a job
-- that is gone, reserved, dead or finished is stale (dropped: it would expire a later job with
-- that jid). A queue with expiries has the note that makes FETCH look at them (meta:
-- expiring). Returns the problems seen, each {kind, detail}.
local jid, repair = ARGV[1], ARGV[2] == '1'
local problems = {}
if jid ~= '' then
  if redis.call('ZSCORE', KEYS[1], jid) and (redis.call('HEXISTS', KEYS[2], jid) == 0
      or redis.call('ZSCORE', KEYS[3], jid) or redis.call('ZSCORE', KEYS[4], jid)
      or redis.call('ZSCORE', KEYS[5], jid)) then
    if repair then redis.call('ZREM', KEYS[1], jid) end
    problems[#problems + 1] = {'stale expiry', ''}
  end
elseif redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HEXISTS', KEYS[6], 'expiring') == 0 then
  if repair then redis.call('HSET', KEYS[6], 'expiring', 1) end
  problems[#problems + 1] = {'expiries unseen by fetch', ''}
end
return problems
