-- enqueue: move jobs from a sorted set (scheduled, retries, or a MUTATE target) onto their
-- queue, atomically per job.
-- KEYS: 1 jobs hash, 2 source zset, 3 queue list
-- ARGV: 1 pushed channel, 2 queue name, then pairs (jid, payload); payload '' keeps the record.
-- Guarantees: a job moves only if this call removed it from the source set (ZREM returned 1),
-- so concurrent reapers on several brokers move each job exactly once. Returns how many moved.
local moved = 0
local woke = false
for i = 3, #ARGV, 2 do
  local jid = ARGV[i]
  if redis.call('ZREM', KEYS[2], jid) == 1 then
    if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[1], jid, ARGV[i + 1]) end
    if redis.call('LPUSH', KEYS[3], jid) == 1 then woke = true end
    moved = moved + 1
  end
end
if woke then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return moved
