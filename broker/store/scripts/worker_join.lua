-- worker_join: register one more connection of a worker process (HELLO with a wid).
-- KEYS: 1 worker hash, 2 workers zset, 3 holding zset
-- ARGV: 1 wid, 2 now, 3 HELLO info JSON
-- The first connection's info is kept; the state starts as running; a worker that went and
-- comes back is no longer lost (holding). Returns the state.
redis.call('HSETNX', KEYS[1], 'info', ARGV[3])
redis.call('HSETNX', KEYS[1], 'state', 'running')
redis.call('HSETNX', KEYS[1], 'beat', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'connections', 1)
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('HGET', KEYS[1], 'state')
