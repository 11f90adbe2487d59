-- cancel: stop one job of a queue from running (JOB CANCEL), atomically.
-- KEYS: 1 jobs hash, 2 queue list, 3 working zset, 4 scheduled zset, 5 retries zset,
--       6 holders hash, 7 jid index, 8 final hash, 9 finished zset, 10 due:finished,
--       11 progress hash, 12 awaited zset, 13 dead zset, 14 expiring zset, 15 prioritized zset,
--       16 meta hash
-- ARGV: 1 queue name, 2 jid, 3 now (unix seconds), 4 the keep policy (lib.lua),
--       5 finished channel
-- A waiting, blocked (lib_workflows.lua), scheduled or retrying job leaves its place and ends
-- cancelled (kept like a done one, see finish() in lib.lua). A reserved job stays with its worker, marked in holders
-- ('!wid'): the worker hears of it at its next BEAT, and whatever ends the reservation other
-- than an ACK ends the job cancelled (fail.lua). A due index entry left behind stays correct
-- (no later than the earliest entry). Returns 'cancelled', 'cancelling', or '' when there is
-- nothing to cancel (dead, finished or gone). Removing a waiting job costs a scan of the
-- queue list up to it. Events: cancelling, cancelled.
local queue, jid = ARGV[1], ARGV[2]
if not live_here(KEYS[1], KEYS[9], jid) or redis.call('ZSCORE', KEYS[13], jid) then
  return ''
end
if redis.call('ZSCORE', KEYS[3], jid) then
  local holder = redis.call('HGET', KEYS[6], jid) or ''
  if string.sub(holder, 1, 1) ~= '!' then
    redis.call('HSET', KEYS[6], jid, '!' .. holder)
    if listening() then
      publish({event('cancelling', jid, queue, redis.call('HGET', KEYS[1], jid), clock(), '')})
    end
  end
  return 'cancelling'
end
local blocked = wf_base(KEYS[1]) .. 'blocked'  -- a dependant waiting for others (workflows)
local removed = redis.call('ZREM', KEYS[4], jid) + redis.call('ZREM', KEYS[5], jid)
  + redis.call('ZREM', blocked, jid)
wf_forget(wf_base(KEYS[1]), {jid})
local payload = redis.call('HGET', KEYS[1], jid)  -- before finish() may drop it
if removed == 0 then removed = leave_line(KEYS[2], KEYS[15], KEYS[16], jid, payload) end
if removed == 0 then return '' end
redis.call('ZREM', KEYS[14], jid)
local k = {jobs = KEYS[1], final = KEYS[8], finished = KEYS[9], due = KEYS[10],
  index = KEYS[7], progress = KEYS[11]}
finish(k, queue, {jid}, {jid, note('cancelled', '')}, ARGV[3], ARGV[4], 'cancelled')
batch_count(KEYS[16], KEYS[7], {jid}, 'end', ARGV[3])
announce(KEYS[12], ARGV[5], {jid})
if payload and listening() then publish({event('cancelled', jid, queue, payload, clock(), '')}) end
return 'cancelled'
