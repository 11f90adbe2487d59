-- remove: delete jobs that are in a sorted set (dead purge, MUTATE discard and clear), with
-- their records and jid index entries, atomically per job.
-- KEYS: 1 jobs hash, 2 the zset, 3 jid index, 4 due index of the zset
-- ARGV: 1 queue name, then the entries (see pick() in lib.lua): 'due' <now> <limit> |
--       'all' <limit> | 'jids' <jid> <score> ...
-- Returns how many were removed. Guarantees: a job is deleted only if this call took it out of
-- the set (at the score the caller read, for 'jids'). With 'due' and 'all' the queue's due index
-- entry is made exact.
local queue = ARGV[1]
local chosen = pick(KEYS[2], 2)
if #chosen > 0 then
  redis.call('ZREM', KEYS[2], unpack(chosen))
  redis.call('HDEL', KEYS[1], unpack(chosen))
  for _, jid in ipairs(chosen) do forget(KEYS[3], jid, queue) end
end
if ARGV[2] ~= 'jids' then refresh_due(KEYS[4], KEYS[2], queue) end
return #chosen
