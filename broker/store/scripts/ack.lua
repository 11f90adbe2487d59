-- ack: finish reserved jobs of one queue, atomically per job.
-- KEYS: 1 jobs hash, 2 working zset, 3 jid index, 4 stats hash
-- ARGV: 1 day (YYYY-MM-DD), 2 queue name, then jids
-- Returns the jids whose reservation existed: those jobs are gone (record, reservation and jid
-- index entry together) and counted as processed. An ACK for an unknown or expired reservation
-- changes nothing.
local done = {}
for i = 3, #ARGV do
  local jid = ARGV[i]
  if redis.call('ZREM', KEYS[2], jid) == 1 then
    redis.call('HDEL', KEYS[1], jid)
    forget(KEYS[3], jid, ARGV[2])
    done[#done + 1] = jid
  end
end
if #done > 0 then
  redis.call('HINCRBY', KEYS[4], 'processed', #done)
  redis.call('HINCRBY', KEYS[4], 'processed:' .. ARGV[1], #done)
end
return done
