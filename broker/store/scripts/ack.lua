-- ack: finish a reserved job, atomically.
-- KEYS: 1 jobs hash, 2 working zset, 3 owners hash, 4 stats hash
-- ARGV: 1 jid, 2 day (YYYY-MM-DD)
-- Returns 1 when the reservation existed (the job is gone and counted as processed), else 0
-- and nothing changes: an ACK for an unknown or expired reservation is harmless.
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'processed', 1)
redis.call('HINCRBY', KEYS[4], 'processed:' .. ARGV[2], 1)
return 1
