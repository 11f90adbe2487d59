-- lease_renew: keep a lease (see lease_end.lua) for ARGV[2] more milliseconds, if still held by
-- the holder of token ARGV[1].
-- KEYS: 1 the lease
-- Returns 1 kept, 0 not held by this token (expired, taken by another).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
