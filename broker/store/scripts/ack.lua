-- ack: finish reserved jobs of one queue, atomically per job.
-- KEYS: 1 jobs hash, 2 working zset, 3 stats hash
-- ARGV: 1 day (YYYY-MM-DD), then jids
-- Returns the jids whose reservation existed: those jobs are gone and counted as processed.
-- An ACK for an unknown or expired reservation changes nothing.
local done = {}
for i = 2, #ARGV do
  local jid = ARGV[i]
  if redis.call('ZREM', KEYS[2], jid) == 1 then
    redis.call('HDEL', KEYS[1], jid)
    done[#done + 1] = jid
  end
end
if #done > 0 then
  redis.call('HINCRBY', KEYS[3], 'processed', #done)
  redis.call('HINCRBY', KEYS[3], 'processed:' .. ARGV[1], #done)
end
return done
