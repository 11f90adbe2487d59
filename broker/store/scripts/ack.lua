-- ack: finish reserved jobs of one queue, atomically per job.
-- KEYS: 1 jobs hash, 2 working zset, 3 jid index, 4 stats hash, 5 final hash, 6 finished zset,
--       7 due:finished, 8 progress hash, 9 awaited zset
-- ARGV: 1 day (YYYY-MM-DD), 2 queue name, 3 now (RFC3339), 4 purge time of final records ('':
--       keep none), 5 final records kept per queue at most, 6 finished channel, then pairs
--       (jid, result JSON or '')
-- Returns the jids whose reservation existed: those jobs are done, counted as processed, and
-- their final records (with the result) kept, or their index entries gone, in the same step.
-- An ACK for an unknown or expired reservation changes nothing. Each kind of read or write is
-- one call for the whole batch.
local queue = ARGV[2]
local jids, results = {}, {}
for i = 7, #ARGV, 2 do
  jids[#jids + 1] = ARGV[i]
  results[#results + 1] = ARGV[i + 1]
end
local reserved = redis.call('ZMSCORE', KEYS[2], unpack(jids))
local done, kept, seen = {}, {}, {}
for i, jid in ipairs(jids) do
  if reserved[i] and not seen[jid] then
    seen[jid] = i
    done[#done + 1] = jid
  end
end
if #done == 0 then return done end
local payloads = redis.call('HMGET', KEYS[1], unpack(done))
for i, jid in ipairs(done) do
  kept[#kept + 1] = jid
  kept[#kept + 1] = final_record('done', ARGV[3], results[seen[jid]], payloads[i] or 'null')
end
redis.call('ZREM', KEYS[2], unpack(done))
redis.call('HDEL', KEYS[1], unpack(done))
local k = {final = KEYS[5], finished = KEYS[6], due = KEYS[7], index = KEYS[3],
  progress = KEYS[8]}
keep_final(k, queue, kept, ARGV[4], ARGV[5])
announce(KEYS[9], ARGV[6], done)
redis.call('HINCRBY', KEYS[4], 'processed', #done)
redis.call('HINCRBY', KEYS[4], 'processed:' .. ARGV[1], #done)
return done
