-- ack: finish reserved jobs of one queue, atomically per job.
-- KEYS: 1 jobs hash, 2 working zset, 3 jid index, 4 stats hash, 5 final hash, 6 finished zset,
--       7 due:finished, 8 progress hash, 9 awaited zset, 10 holders hash, 11 meta hash (its
--       reservations' lanes get their slots back), then the held sets of the acking workers
-- ARGV: 1 day (YYYY-MM-DD), 2 queue name, 3 now (unix seconds), 4 the keep policy (keep_policy()
--       in lib.lua), 5 finished channel, 6 N, then N jids, then N places of their acking
--       workers' held sets among KEYS after the 11th (0: no worker id), then pairs (position
--       among the jids, result JSON) for those that carry a result
-- Returns {the jids whose reservation existed, the number of batch callbacks and workflow
-- settlements (wf:due) that came due}:
-- those jobs are done and counted as processed (and towards their batches: batch_count());
-- their records stay, in the finished set, with the result noted (see finish() in lib.lua),
-- or go. A job whose cancel was asked for is done all the same (it ran). An ACK for an unknown
-- or expired reservation changes nothing. Each kind of read or write is one call for the whole
-- batch. Events: done (with the result).
local queue = ARGV[2]
local count = tonumber(ARGV[6])
local jids, results, workers = {}, {}, {}
for i = 1, count do
  jids[i] = ARGV[6 + i]
  workers[i] = tonumber(ARGV[6 + count + i])
end
for i = 7 + 2 * count, #ARGV, 2 do results[tonumber(ARGV[i])] = ARGV[i + 1] end
local reserved = redis.call('ZMSCORE', KEYS[2], unpack(jids))
-- The queue's hashes that name jobs for a feature (progress, lanes' leases, batches,
-- workflows' dependants): a queue with none of them (plain jobs) skips their reads, one EXISTS
-- instead of four.
local base = string.sub(KEYS[11], 1, -5)
local noted = redis.call('EXISTS', KEYS[8], base .. 'leases', base .. 'batched',
  base .. 'dependants') > 0
local progress = noted and redis.call('HMGET', KEYS[8], unpack(jids)) or {}
local done, notes, seen, kept, extras, ackers = {}, {}, {}, {}, {}, {}
for i, jid in ipairs(jids) do
  if reserved[i] and not seen[jid] then
    seen[jid] = true
    done[#done + 1] = jid
    ackers[#done] = workers[i]
    kept[#done] = results[i] or ''
    extras[#done] = ',"reserved_until":' .. reservation(progress[i], reserved[i])
      .. (results[i] and ',"result":' .. results[i] or '')
    local text = note('done', results[i] or '')
    if text ~= '' then
      notes[#notes + 1] = jid
      notes[#notes + 1] = text
    end
  end
end
if #done == 0 then return {done, 0} end
if listening() then
  local at, events = clock(), {}
  local payloads = redis.call('HMGET', KEYS[1], unpack(done))
  for i, jid in ipairs(done) do
    local result = kept[i] ~= '' and ',"result":' .. kept[i] or ''
    events[i] = event('done', jid, queue, payloads[i], at, result)
  end
  publish(events)
end
redis.call('ZREM', KEYS[2], unpack(done))
redis.call('HDEL', KEYS[10], unpack(done))
if noted then unlease(KEYS[11], done) end
local held = {}  -- each acking worker's own jobs leave its held set (others' stay, stale)
for i, jid in ipairs(done) do
  local place = ackers[i]
  if place > 0 then
    held[place] = held[place] or {}
    held[place][#held[place] + 1] = queue .. ':' .. jid
  end
end
for place, entries in pairs(held) do global('SREM', KEYS[11 + place], unpack(entries)) end
local k = {jobs = KEYS[1], final = KEYS[5], finished = KEYS[6], due = KEYS[7], index = KEYS[3],
  progress = KEYS[8]}
finish(k, queue, done, notes, ARGV[3], ARGV[4], 'done', extras)
if noted then batch_count(KEYS[11], KEYS[3], done, 'ok', ARGV[3]) end
announce(KEYS[9], ARGV[5], done)
global('HINCRBY', KEYS[4], 'processed', #done)
global('HINCRBY', KEYS[4], 'processed:' .. ARGV[1], #done)
return {done, batch_due.n + wf_due.n}
