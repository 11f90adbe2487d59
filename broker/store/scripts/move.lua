-- move: move jobs from one sorted set of a queue to another with a new score (MUTATE kill).
-- KEYS: 1 source zset, 2 target zset, 3 due index of the target, 4 expiring zset (a job moved
--       to dead no longer expires, as one that died by FAIL), 5 jobs hash, 6 jid index
-- ARGV: 1 queue name, 2 score, 3 now, 4 history mode (archive() in lib_history.lua: a job moved
--       to dead is archived as dead), then 'jids' <jid> <score read> ...
-- Guarantees: a job enters the target only if this call took it out of the source at the score
-- the caller read; the queue is in the target's due index no later than the new score. A job
-- moved to dead dies as by its last FAIL (fail.lua, died() in lib_batches.lua).
-- Returns how many moved.
local chosen = pick(KEYS[1], ARGV, 5)
for _, jid in ipairs(chosen) do
  redis.call('ZREM', KEYS[1], jid)
  redis.call('ZADD', KEYS[2], ARGV[2], jid)
end
if #chosen > 0 then
  due_add(KEYS[3], ARGV[2], ARGV[1])
  redis.call('ZREM', KEYS[4], unpack(chosen))
  if string.sub(KEYS[2], -5) == ':dead' then
    local payloads = redis.call('HMGET', KEYS[5], unpack(chosen))
    archive(KEYS[5], KEYS[6], ARGV[1], ARGV[4], 'dead', ARGV[3], chosen, payloads)
    died(wf_base(KEYS[5]) .. 'meta', KEYS[6], chosen, tonumber(ARGV[3]))
  end
end
return #chosen
