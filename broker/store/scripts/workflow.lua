-- workflow: settle the ends of dependencies marked in wf:due (see lib_workflows.lua), each in
-- its dependant's queue, atomically per entry.
-- KEYS: 1 wf:due zset, 2 jid index, 3 awaited zset
-- ARGV: 1 now (unix seconds), 2 finished jobs kept per queue at most, 3 finished channel,
--       4 most entries to take
-- Returns how many entries it took. Guarantees: the script selects and removes the entries
-- itself, so each is settled once whatever the number of brokers. A dependant whose policy is
-- 'fail' ends cancelled (kept like a done job, see finish() in lib.lua), leaves `blocked`, and
-- its own end is counted (its batch; the jobs waiting for it, which may mark more entries
-- due); one whose dependencies are all met is released (wf_release). Events: cancelled.
local now = ARGV[1]
local taken = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
if #taken == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(taken))
local g = string.sub(KEYS[2], 1, -5)
for _, entry in ipairs(taken) do
  local e = cjson.decode(entry)
  local outcome, queue, jid, dep, result = e[1], e[2], e[3], e[4], e[5]
  local base = 'hopper:q:{' .. queue .. '}:'
  if wf_settle(base, KEYS[2], jid, dep, outcome, result, now) == 'fail' then
    redis.call('ZREM', base .. 'blocked', jid)
    redis.call('HDEL', base .. 'waits', jid)
    local payload = redis.call('HGET', base .. 'jobs', jid)
    local k = {jobs = base .. 'jobs', final = base .. 'final', finished = base .. 'finished',
      due = g .. 'due:finished', index = KEYS[2], progress = base .. 'progress'}
    finish(k, queue, {jid}, {jid, note('cancelled', '')}, now, ARGV[2], 'cancelled')
    batch_count(base .. 'meta', KEYS[2], {jid}, 'end', now)
    announce(KEYS[3], ARGV[3], {jid})
    if payload and listening() then
      local extra = ',"dependency":' .. cjson.encode(dep)
      publish({event('cancelled', jid, queue, payload, clock(), extra)})
    end
  end
end
return #taken
