-- enqueue: move jobs from a sorted set (scheduled, retries; MUTATE requeue) onto their queue,
-- stamping `enqueued_at`, atomically per job.
-- KEYS: 1 jobs hash, 2 source zset, 3 queue list, 4 due index of the source, 5 queues set,
--       6 jid index, 7 meta hash, 8 prioritized zset, 9 expiring zset
-- ARGV: 1 pushed channel, 2 queue name, 3 enqueued_at text, 4 the expiries of the jobs given
--       ('' or JSON {jid: unix seconds}: a job requeued from dead, which kept none, expires
--       again), then the entries (see pick() in lib.lua): 'due' <now> <limit> | 'jids' <jid>
--       <score> ...
-- Returns {moved, selected}: selected < limit means nothing more is due.
-- Guarantees: a job moves only if this call took it out of the source set, at the score the
-- caller read for 'jids', so concurrent loops and MUTATEs on several brokers move each job once.
-- An entry without a record is dropped. With 'due' the queue's due index entry is made exact.
local queue = ARGV[2]
local chosen = pick(KEYS[2], ARGV, 5)
local moved = {}
if #chosen > 0 then
  redis.call('ZREM', KEYS[2], unpack(chosen))
  local payloads = redis.call('HMGET', KEYS[1], unpack(chosen))
  local stamped, kept = {}, {}
  for i, jid in ipairs(chosen) do
    if payloads[i] then
      stamped[#stamped + 1] = jid
      stamped[#stamped + 1] = stamp(payloads[i], ARGV[3])
      moved[#moved + 1] = jid
      kept[#moved] = payloads[i]
    else
      forget_all(KEYS[6], {jid}, queue)
    end
  end
  if #moved > 0 then
    redis.call('HSET', KEYS[1], unpack(stamped))
    if line_up(KEYS[3], KEYS[8], KEYS[7], moved, kept) then
      redis.call('PUBLISH', ARGV[1], queue)
    end
    local expiries = ARGV[4] ~= '' and cjson.decode(ARGV[4]) or {}
    for _, jid in ipairs(moved) do
      if expiries[jid] then
        redis.call('ZADD', KEYS[9], expiries[jid], jid)
        redis.call('HSET', KEYS[7], 'expiring', 1)
      end
    end
    global('SADD', KEYS[5], queue)
    if listening() then
      local at, events = clock(), {}
      for i = 2, #stamped, 2 do
        events[#events + 1] = event('enqueued', stamped[i - 1], queue, stamped[i], at, '')
      end
      publish(events)
    end
  end
end
if ARGV[5] == 'due' then refresh_due(KEYS[4], KEYS[2], queue) end
return {#moved, #chosen}
