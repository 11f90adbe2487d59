-- state: where one job of a queue is, read in one step (JOB STATE, TRACK GET, JOB WAIT);
-- read-only.
-- KEYS: 1 jobs hash, 2 working, 3 scheduled, 4 retries, 5 dead, 6 finished, 7 final hash,
--       8 progress hash, 9 holders hash, 10 blocked zset (jobs waiting for dependencies)
-- ARGV: 1 jid
-- Returns {payload or false, place, score or false, note or false, progress or false, holder
-- or false}: place is the sorted set holding the job (finished for a finished one), 'queue' for
-- a waiting one (a record in no sorted set is in the queue list: see docs/storage.md), or ''
-- for none; holder is a reserved job's holders entry.
local jid = ARGV[1]
local payload = redis.call('HGET', KEYS[1], jid)
local place, score = '', false
if payload then
  place = 'queue'
  local names = {'working', 'scheduled', 'retries', 'dead', 'finished', [9] = 'blocked'}
  for _, i in ipairs({2, 3, 4, 5, 6, 10}) do
    local found = redis.call('ZSCORE', KEYS[i], jid)
    if found then
      place, score = names[i - 1], found
      break
    end
  end
end
local holder = place == 'working' and redis.call('HGET', KEYS[9], jid)
return {payload, place, score, redis.call('HGET', KEYS[7], jid), redis.call('HGET', KEYS[8], jid),
  holder}
