-- lost: forget a worker that went (its record deleted) once every job it held was dealt with.
-- KEYS: 1 holding zset, 2 the worker's held set, 3 workers zset
-- ARGV: 1 wid, then `queue:jid` entries to drop from the held set (no longer its jobs)
-- Returns 1 when the worker is forgotten (it came back, or holds nothing more), else 0.
if #ARGV > 1 then redis.call('SREM', KEYS[2], unpack(ARGV, 2)) end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) == false and redis.call('SCARD', KEYS[2]) > 0 then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
