-- drain: take up to N waiting jobs off a queue (its list, prioritized zset, then lanes) and
-- delete them (QUEUE REMOVE), atomically.
-- KEYS: 1 queue list, 2 jobs hash, 3 jid index, 4 meta hash, 5 queues set, 6 progress hash,
--       7 expiring zset, 8 prioritized zset
-- ARGV: 1 queue name, 2 N
-- A job of a batch counts as ended there (see batch_count() in lib_batches.lua).
-- Returns {deleted, left waiting}. Once the queue has no job waiting (nor blocked, see
-- lib_workflows.lua) it is no longer listed and
-- its settings (paused, limits) go, but for the note that it may hold jobs with an expiry; its
-- scheduled, retrying, reserved, dead and finished jobs are not touched.
local jids = redis.call('RPOP', KEYS[1], ARGV[2]) or {}
if #jids < tonumber(ARGV[2]) then
  local ranked = redis.call('ZPOPMIN', KEYS[8], tonumber(ARGV[2]) - #jids)
  for i = 1, #ranked, 2 do jids[#jids + 1] = ranked[i] end
end
if #jids < tonumber(ARGV[2]) then
  for _, jid in ipairs(empty_lanes(KEYS[4], tonumber(ARGV[2]) - #jids)) do jids[#jids + 1] = jid end
end
if #jids > 0 then
  redis.call('HDEL', KEYS[2], unpack(jids))
  redis.call('HDEL', KEYS[6], unpack(jids))
  redis.call('ZREM', KEYS[7], unpack(jids))
  forget_all(KEYS[3], jids, ARGV[1])
  batch_count(KEYS[4], KEYS[3], jids, 'end', tonumber(clock()))
end
local left = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[8])
  + (tonumber(redis.call('HGET', KEYS[4], 'laned')) or 0)
if left == 0 then
  redis.call('DEL', KEYS[4], lanes_of(KEYS[4]).buckets, lanes_of(KEYS[4]).refills)
  if redis.call('EXISTS', KEYS[7]) == 1 then redis.call('HSET', KEYS[4], 'expiring', 1) end
  if redis.call('EXISTS', wf_base(KEYS[2]) .. 'blocked') == 0 then  -- else FLUSH must find it
    global('SREM', KEYS[5], ARGV[1])  -- split mode: checked again after (queues.py)
  end
end
return {#jids, left}
