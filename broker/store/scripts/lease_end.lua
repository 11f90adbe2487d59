-- lease_end: give back a lease (a string key holding its holder's token), if still held by it.
-- KEYS: 1 the lease
-- ARGV: 1 the holder's token
-- Returns 1 given back, 0 not held by this token (expired, taken by another).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
