-- release: hand a reserved job straight back to the head of its queue (fetch middleware
-- halted), atomically.
-- KEYS: 1 working zset, 2 queue list, 3 queues set, 4 holders hash, 5 expiring zset, 6 meta,
--       7 jobs hash, 8 prioritized zset
-- ARGV: 1 jid, 2 queue name, 3 when the job expires ('' = never: FETCH took its entry out)
-- Guarantees: the job goes back only if this call ended its reservation, and its queue is
-- listed (a QUEUE REMOVE may have run meanwhile); a job of a group goes back to its lane, and
-- its reservation's lanes get their slots back. A job whose cancel was asked for (holders:
-- '!wid', cancel.lua) does not go back: nothing changes, and the caller ends the reservation
-- through fail.lua, which ends it cancelled. Returns 1 released, 0 no such reservation, 2 a
-- cancel was asked for.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if string.sub(redis.call('HGET', KEYS[4], ARGV[1]) or '', 1, 1) == '!' then return 2 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[6], 'expiring', 1)
end
unlease(KEYS[6], {ARGV[1]})
local payload = redis.call('HGET', KEYS[7], ARGV[1])
local priority, group = nil, nil
if payload then priority, group = head_of(payload) end
if group then  -- first of its priority in its group's lane
  enter_lane(lanes_of(KEYS[6]), 'g:' .. group, (10 - (priority or 5)) * PRIORITY_STEP, ARGV[1])
elseif priority then  -- first of its priority
  redis.call('ZADD', KEYS[8], (10 - priority) * PRIORITY_STEP, ARGV[1])
  redis.call('HSET', KEYS[6], 'prioritized', 1)
else
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
global('SADD', KEYS[3], ARGV[2])
return 1
