-- flush: delete up to N jobs of one queue wherever they are (FLUSH), each with its record and
-- jid index entry, atomically per job; once the queue holds nothing, forget it entirely.
-- KEYS: 1 jobs hash, 2 queue list, 3 scheduled, 4 retries, 5 dead, 6 working, 7 meta hash,
--       8 jid index, 9 queues set, 10-13 due:scheduled, due:retries, due:dead, due:working
-- ARGV: 1 queue name, 2 N
-- Returns how many jobs the queue still holds. Every state in between is consistent: a job is
-- either whole or gone.
local queue, budget = ARGV[1], tonumber(ARGV[2])
local function drop(jid)
  redis.call('HDEL', KEYS[1], jid)
  forget(KEYS[8], jid, queue)
end
for _, jid in ipairs(redis.call('RPOP', KEYS[2], budget) or {}) do
  drop(jid)
  budget = budget - 1
end
for i = 3, 6 do
  if budget <= 0 then break end
  for _, jid in ipairs(redis.call('ZRANGE', KEYS[i], 0, budget - 1)) do
    redis.call('ZREM', KEYS[i], jid)
    drop(jid)
    budget = budget - 1
  end
end
local left = redis.call('LLEN', KEYS[2])
for i = 3, 6 do left = left + redis.call('ZCARD', KEYS[i]) end
if left > 0 then return left end
for _, jid in ipairs(redis.call('HKEYS', KEYS[1])) do forget(KEYS[8], jid, queue) end
redis.call('DEL', KEYS[1], KEYS[7])
redis.call('SREM', KEYS[9], queue)
for i = 10, 13 do redis.call('ZREM', KEYS[i], queue) end
return 0
