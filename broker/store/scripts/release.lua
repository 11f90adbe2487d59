-- release: hand a reserved job straight back to the head of its queue (fetch middleware
-- halted), atomically.
-- KEYS: 1 working zset, 2 queue list, 3 queues set, 4 holders hash, 5 expiring zset, 6 meta
-- ARGV: 1 jid, 2 queue name, 3 when the job expires ('' = never: FETCH took its entry out)
-- Guarantees: the job goes back only if this call ended its reservation, and its queue is
-- listed (a QUEUE REMOVE may have run meanwhile). Returns 1 or 0.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[6], 'expiring', 1)
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
