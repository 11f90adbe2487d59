-- remove: delete jobs that are in a sorted set (dead purge, MUTATE discard/clear), atomically
-- per job.
-- KEYS: 1 jobs hash, 2 the zset
-- ARGV: jids
-- Guarantees: a job's record is deleted only if this call removed it from the set. Returns
-- the jids removed, so the caller can drop them from the jid index.
local removed = {}
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed[#removed + 1] = ARGV[i]
  end
end
return removed
