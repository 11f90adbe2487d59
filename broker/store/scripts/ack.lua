-- ack: finish reserved jobs of one queue, atomically per job.
-- KEYS: 1 jobs hash, 2 working zset, 3 jid index, 4 stats hash
-- ARGV: 1 day (YYYY-MM-DD), 2 queue name, then jids
-- Returns the jids whose reservation existed: those jobs are gone (record, reservation and jid
-- index entry together) and counted as processed. An ACK for an unknown or expired reservation
-- changes nothing. Each kind of read or write is one call for the whole batch.
local queue = ARGV[2]
local jids = {}
for i = 3, #ARGV do jids[#jids + 1] = ARGV[i] end
local reserved = redis.call('ZMSCORE', KEYS[2], unpack(jids))
local done, seen = {}, {}
for i, jid in ipairs(jids) do
  if reserved[i] and not seen[jid] then
    seen[jid] = true
    done[#done + 1] = jid
  end
end
if #done == 0 then return done end
redis.call('ZREM', KEYS[2], unpack(done))
redis.call('HDEL', KEYS[1], unpack(done))
local owners = redis.call('HMGET', KEYS[3], unpack(done))
local ours = {}
for i, jid in ipairs(done) do
  if owners[i] == queue then ours[#ours + 1] = jid end
end
if #ours > 0 then redis.call('HDEL', KEYS[3], unpack(ours)) end
redis.call('HINCRBY', KEYS[4], 'processed', #done)
redis.call('HINCRBY', KEYS[4], 'processed:' .. ARGV[1], #done)
return done
