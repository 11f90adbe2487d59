-- rename: give a job a new jid, wherever it is in its queue (a jid that named jobs in two
-- queues: schema 1 allowed it, hopper check --repair mends it), atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 working, 4 scheduled, 5 retries, 6 dead, 7 jid index,
--       8 holders hash, 9 expiring zset, 10 prioritized zset, 11 meta hash
-- ARGV: 1 queue name, 2 old jid, 3 new jid, 4 the payload with the new jid, 5 split mode: '1'
--       when the new jid was claimed for the queue before the call (store/jobs.py: rename)
-- Returns 1, or 0 when the job is gone or the new jid is taken (nothing changes).
local old, new = ARGV[2], ARGV[3]
if redis.call('HEXISTS', KEYS[1], old) == 0 then return 0 end
if split then
  if ARGV[5] ~= '1' then return 0 end
elseif redis.call('HSETNX', KEYS[7], new, ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[1], old)
redis.call('HSET', KEYS[1], new, ARGV[4])
local at = redis.call('LPOS', KEYS[2], old)
if at then redis.call('LSET', KEYS[2], at, new) end
for i = 3, 6 do
  local score = redis.call('ZSCORE', KEYS[i], old)
  if score then
    redis.call('ZREM', KEYS[i], old)
    redis.call('ZADD', KEYS[i], score, new)
  end
end
local expires = redis.call('ZSCORE', KEYS[9], old)
if expires then
  redis.call('ZREM', KEYS[9], old)
  redis.call('ZADD', KEYS[9], expires, new)
end
local ranked = redis.call('ZSCORE', KEYS[10], old)
if ranked then
  redis.call('ZREM', KEYS[10], old)
  redis.call('ZADD', KEYS[10], ranked, new)
end
local l = lanes_of(KEYS[11])
local lease = redis.call('HGET', l.leases, old)
if lease then
  redis.call('HDEL', l.leases, old)
  redis.call('HSET', l.leases, new, lease)
end
for _, id in ipairs(lane_ids(ARGV[4])) do
  local score = redis.call('ZSCORE', l.lane .. id, old)
  if score then
    redis.call('ZREM', l.lane .. id, old)
    redis.call('ZADD', l.lane .. id, score, new)
  end
end
local holder = redis.call('HGET', KEYS[8], old)
if holder then
  redis.call('HDEL', KEYS[8], old)
  redis.call('HSET', KEYS[8], new, holder)
end
return 1
