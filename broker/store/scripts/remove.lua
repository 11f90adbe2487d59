-- remove: delete jobs that are in a sorted set (dead purge, MUTATE discard and clear, the purge
-- of finished jobs), with their records, notes, progress and jid index entries, atomically per
-- job.
-- KEYS: 1 jobs hash, 2 the zset, 3 jid index, 4 due index of the zset, 5 progress hash,
--       6 final hash, 7 expiring zset
-- ARGV: 1 queue name, 2 the index value of these jobs (the queue, or ~queue for finished ones),
--       then the entries (see pick() in lib.lua): 'due' <bound> <limit> | 'all' <limit> |
--       'jids' <jid> <score> ...
-- A job of a batch counts as ended there (see batch_count() in lib_batches.lua).
-- Returns how many were removed. Guarantees: a job is deleted only if this call took it out of
-- the set (at the score the caller read, for 'jids'). With 'due' and 'all' the queue's due index
-- entry is made exact.
local chosen = pick(KEYS[2], ARGV, 3)
if #chosen > 0 then
  redis.call('ZREM', KEYS[2], unpack(chosen))
  redis.call('HDEL', KEYS[1], unpack(chosen))
  redis.call('HDEL', KEYS[5], unpack(chosen))
  redis.call('HDEL', KEYS[6], unpack(chosen))
  redis.call('ZREM', KEYS[7], unpack(chosen))
  forget_all(KEYS[3], chosen, ARGV[2])
  batch_count(KEYS[1], KEYS[3], chosen, 'end', tonumber(clock()))
end
if ARGV[3] ~= 'jids' then refresh_due(KEYS[4], KEYS[2], ARGV[1]) end
return #chosen
