-- release: hand a reserved job straight back to the head of its queue (fetch middleware
-- halted), atomically.
-- KEYS: 1 working zset, 2 queue list
-- ARGV: 1 jid
-- Guarantees: the job goes back only if this call ended its reservation. Returns 1 or 0.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
