-- fail: end a reservation other than by ACK: FAIL, an expiry found by the reaper, a lost
-- worker, a fetch Discard, or JOB SNOOZE.
-- KEYS: 1 jobs hash, 2 working zset, 3 retries zset, 4 dead zset, 5 jid index, 6 stats hash,
--       7 due:retries, 8 due:dead, 9 final hash, 10 finished zset, 11 due:finished,
--       12 progress hash, 13 awaited zset, 14 holders hash, 15 held set of ARGV[11],
--       16 scheduled zset, 17 due:scheduled, 18 expiring zset, 19 meta hash
-- ARGV: 1 queue name, 2 jid, 3 the reservation's expiry as the caller read it ('' = any),
--       4 day, 5 target 'retries' | 'dead' | 'scheduled' (a snooze: no failure) | '' (discard
--       the job), 6 score in the target set, 7 the new payload (with its failure), 8 now (unix
--       seconds), 9 the keep policy (keep_policy() in lib.lua), 10 finished channel,
--       11 the holder as the caller read it ('' = unknown), 12 errtype (for the event),
--       13 when the job expires ('' = never): a job that will run again is checked at FETCH
-- Returns 1 when this call ended the reservation (2: and a batch callback came due, see
-- batch_count() in lib_batches.lua: a dead job counts as failed, a discarded or cancelled one as
-- ended; or the end of a job others wait for came due in wf:due: wf_count()), 0 when there is
-- none, -1 when it is not the one the caller read (extended, or ended and made again since): the
-- caller computed the new payload from what it read, so it must read again. Only the caller that
-- got 1 owns the job's next step, so two reapers never move one job twice and no stale copy is ever written back.
-- A job whose cancel was asked for ends cancelled, whatever the target: it is never retried.
-- A discarded or cancelled job is kept like a done one (see finish() in lib.lua); JOB WAITs
-- hear of discarded, cancelled and dead jobs. Events: failed (to retries), snoozed, dead,
-- discarded, cancelled.
local queue, jid, target = ARGV[1], ARGV[2], ARGV[5]
local expiry = redis.call('ZSCORE', KEYS[2], jid)
if not expiry then return 0 end
if ARGV[3] ~= '' and tonumber(expiry) ~= tonumber(ARGV[3]) then return -1 end
redis.call('ZREM', KEYS[2], jid)
unlease(KEYS[19], {jid})
local holder = redis.call('HGET', KEYS[14], jid)
if holder then
  redis.call('HDEL', KEYS[14], jid)
  if ARGV[11] ~= '' and (holder == ARGV[11] or holder == '!' .. ARGV[11]) then
    global('SREM', KEYS[15], queue .. ':' .. jid)
  end
end
if target ~= 'scheduled' then
  for _, field in ipairs({'processed', 'failures'}) do
    global('HINCRBY', KEYS[6], field, 1)
    global('HINCRBY', KEYS[6], field .. ':' .. ARGV[4], 1)
  end
end
local state = 'discarded'
if holder and string.sub(holder, 1, 1) == '!' then
  target, state = '', 'cancelled'
end
if target == 'dead' then  -- for good
  died(KEYS[19], KEYS[5], {jid}, ARGV[8])
elseif target ~= 'scheduled' then  -- a run that failed, or the job's end: its batch counts it
  batch_count(KEYS[19], KEYS[5], {jid}, target == 'retries' and 'fail' or 'end', ARGV[8])
end
local ended = (batch_due.n + wf_due.n) > 0 and 2 or 1
local until_ = ',"reserved_until":' .. reservation(redis.call('HGET', KEYS[12], jid), expiry)
local sets = {retries = {3, 7}, dead = {4, 8}, scheduled = {16, 17}}
local place = sets[target]
if listening() then
  local names = {retries = 'failed', dead = 'dead', scheduled = 'snoozed'}
  local name = names[target] or state
  local extra = ',"errtype":' .. cjson.encode(ARGV[12])
  if target == 'retries' or target == 'scheduled' then extra = extra .. ',"run_at":' .. ARGV[6] end
  publish({event(name, jid, queue, ARGV[7] ~= '' and ARGV[7] or nil, clock(), extra)})
end
if place then
  redis.call('HSET', KEYS[1], jid, ARGV[7])
  redis.call('ZADD', KEYS[place[1]], ARGV[6], jid)
  due_add(KEYS[place[2]], ARGV[6], queue)
  if target == 'dead' then
    local _, mode = keep_policy(ARGV[9])
    archive(KEYS[1], KEYS[5], queue, mode, 'dead', ARGV[8], {jid}, {ARGV[7]}, {until_})
  else
    if ARGV[13] ~= '' then
      redis.call('ZADD', KEYS[18], ARGV[13], jid)
      redis.call('HSET', KEYS[19], 'expiring', 1)
    end
    return ended
  end
else
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], jid, ARGV[7]) end
  local k = {jobs = KEYS[1], final = KEYS[9], finished = KEYS[10], due = KEYS[11],
    index = KEYS[5], progress = KEYS[12]}
  finish(k, queue, {jid}, {jid, note(state, '')}, ARGV[8], ARGV[9], state, {until_})
end
announce(KEYS[13], ARGV[10], {jid})
return ended
