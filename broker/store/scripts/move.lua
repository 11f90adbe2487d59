-- move: move jobs from one sorted set of a queue to another with a new score (MUTATE kill).
-- KEYS: 1 source zset, 2 target zset
-- ARGV: 1 score, then jids
-- Guarantees: a job enters the target only if this call removed it from the source.
-- Returns how many moved.
local moved = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
