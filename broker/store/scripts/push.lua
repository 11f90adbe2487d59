-- push: store new jobs of one queue and enqueue or schedule each of them, atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 scheduled zset
-- ARGV: 1 pushed channel, 2 queue name, then triples (jid, payload, at); at '' = enqueue now.
-- Guarantees: a jid that already has a record in this queue is refused (result 0) and nothing
-- of it changes; otherwise its record and its place in the queue or schedule appear together
-- (result 1). Publishes the queue name when the queue goes from empty to non-empty, so that
-- FETCHes waiting on other broker processes wake up.
local results = {}
local woke = false
for i = 3, #ARGV, 3 do
  local jid = ARGV[i]
  if redis.call('HSETNX', KEYS[1], jid, ARGV[i + 1]) == 0 then
    results[#results + 1] = 0
  else
    if ARGV[i + 2] == '' then
      if redis.call('LPUSH', KEYS[2], jid) == 1 then woke = true end
    else
      redis.call('ZADD', KEYS[3], ARGV[i + 2], jid)
    end
    results[#results + 1] = 1
  end
end
if woke then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return results
