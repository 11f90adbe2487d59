-- entries: the first N entries of a sorted set with a score <= max, with their records;
-- read-only (the reservation reaper reads expired reservations with it).
-- KEYS: 1 the zset, 2 jobs hash
-- ARGV: 1 max score, 2 N
-- Returns {jid1, score1, payload1 or false, jid2, ...}, earliest first.
local flat = redis.call(
  'ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local found = {}
for i = 1, #flat, 2 do
  found[#found + 1] = flat[i]
  found[#found + 1] = flat[i + 1]
  found[#found + 1] = redis.call('HGET', KEYS[2], flat[i])
end
return found
