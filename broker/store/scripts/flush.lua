-- flush: delete up to N jobs of one queue wherever they are (FLUSH), each with its record,
-- notes, progress and jid index entry, atomically per job; once the queue holds nothing,
-- forget it.
-- KEYS: 1 jobs hash, 2 queue list, 3 scheduled, 4 retries, 5 dead, 6 working, 7 meta hash,
--       8 jid index, 9 queues set, 10-13 due:scheduled, due:retries, due:dead, due:working,
--       14 final hash, 15 finished zset, 16 due:finished, 17 progress hash, 18 holders hash,
--       19 expiring zset, 20 prioritized zset, 21 blocked zset (lib_workflows.lua)
-- ARGV: 1 queue name, 2 N
-- Returns how many jobs the queue still holds (finished ones included). Every state in between
-- is consistent: a job is either whole or gone, and a live job that goes ends for the jobs
-- waiting for it (wf_count() in lib_workflows.lua: they may be in a queue flushed before it).
local queue, budget = ARGV[1], tonumber(ARGV[2])
local base = wf_base(KEYS[1])
local function drop(jids, value)
  if #jids == 0 then return end
  if value == queue then wf_count(KEYS[1], KEYS[8], jids, 'end', tonumber(clock())) end
  wf_forget(base, jids)
  redis.call('HDEL', KEYS[1], unpack(jids))
  redis.call('HDEL', KEYS[14], unpack(jids))
  redis.call('HDEL', KEYS[17], unpack(jids))
  redis.call('HDEL', KEYS[18], unpack(jids))
  redis.call('ZREM', KEYS[19], unpack(jids))
  unlease(KEYS[7], jids)
  redis.call('HDEL', batch_keys(KEYS[7], KEYS[8]).batched, unpack(jids))
  forget_all(KEYS[8], jids, value)
  budget = budget - #jids
end
drop(redis.call('RPOP', KEYS[2], budget) or {}, queue)
if budget > 0 then drop(empty_lanes(KEYS[7], budget), queue) end
for _, i in ipairs({3, 4, 5, 6, 15, 20, 21}) do
  if budget <= 0 then break end
  local jids = redis.call('ZRANGE', KEYS[i], 0, budget - 1)
  if #jids > 0 then redis.call('ZREM', KEYS[i], unpack(jids)) end
  drop(jids, i == 15 and '~' .. queue or queue)
end
local left = redis.call('LLEN', KEYS[2])
for _, i in ipairs({3, 4, 5, 6, 15, 20, 21}) do left = left + redis.call('ZCARD', KEYS[i]) end
left = left + (tonumber(redis.call('HGET', KEYS[7], 'laned')) or 0)
if left > 0 then return left end
forget_all(KEYS[8], redis.call('HKEYS', KEYS[1]), queue)
local l = lanes_of(KEYS[7])
redis.call('DEL', KEYS[1], KEYS[7], KEYS[14], KEYS[17], KEYS[18], KEYS[19], l.ring, l.resting,
  l.running, l.leases, l.buckets, l.refills, batch_keys(KEYS[7], KEYS[8]).batched,
  base .. 'waits', base .. 'unmet', base .. 'dependants')
global('SREM', KEYS[9], queue)  -- split mode: checked again after (queues.py)
for _, i in ipairs({10, 11, 12, 13, 16}) do due_drop(KEYS[i], queue) end
return 0
