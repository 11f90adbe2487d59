-- migrate: move one queue from storage schema 1 to schema 2, atomically.
-- KEYS: 1-6 schema 1 jobs, queue, working, scheduled, retries, dead; 7 schema 1 paused flag,
--       8 schema 1 stats hash, 9 schema 1 queues set; 10-15 schema 2 jobs, queue, working,
--       scheduled, retries, dead; 16 meta hash, 17 stats hash, 18 queues set, 19 jid index,
--       20-23 due:working, due:scheduled, due:retries, due:dead
-- ARGV: 1 queue name
-- Returns the jids of the queue that the jid index already gives to another queue (schema 1
-- let one jid live in two queues): the caller gives those jobs new jids. Every other job keeps
-- its place, the queue its paused flag and listing, and its counters join the global ones.
local queue = ARGV[1]
for i = 1, 6 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('EXISTS', KEYS[i + 9]) == 1 then
      return redis.error_reply('both schemas hold ' .. KEYS[i + 9])
    end
    redis.call('RENAME', KEYS[i], KEYS[i + 9])
  end
end
if redis.call('EXISTS', KEYS[7]) == 1 then redis.call('HSET', KEYS[16], 'paused', 1) end
local counters = redis.call('HGETALL', KEYS[8])
for i = 1, #counters, 2 do redis.call('HINCRBY', KEYS[17], counters[i], counters[i + 1]) end
redis.call('DEL', KEYS[7], KEYS[8])
if redis.call('SISMEMBER', KEYS[9], queue) == 1 or redis.call('LLEN', KEYS[11]) > 0 then
  redis.call('SADD', KEYS[18], queue)
end
for i = 12, 15 do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', KEYS[i + 8], 'LT', first[2], queue) end
end
local taken = {}
for _, jid in ipairs(redis.call('HKEYS', KEYS[10])) do
  if redis.call('HSETNX', KEYS[19], jid, queue) == 0 then
    if redis.call('HGET', KEYS[19], jid) ~= queue then taken[#taken + 1] = jid end
  end
end
return taken
