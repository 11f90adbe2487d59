-- claim: split mode's first step of a push (docs/cluster.md), on the global keys: claim each
-- jid for the queue in the jid index, list the queue, add the queue's due entry for its
-- earliest scheduled job, judge each job's batch, and read the index entries of the jobs'
-- dependencies (workflows), all before the queue's push script (push.lua) runs.
-- KEYS: 1 jid index, 2 queues set, 3 due:scheduled, 4 due:tallies
-- ARGV: 1 queue name, 2 the earliest time a job is scheduled for ('' = none), 3 when the
--       batches loop is to look at the tallies of the queue and of those holding live
--       dependencies ('' = no job of a batch, no dependant), 4 n, then n jids, then n batch
--       specs ('' none, '<bid>' a job of the batch, '<bid> <kind>' its complete | success
--       callback), then the jobs' dependencies
-- Returns JSON [per jid its index entry before the claim (false: none), per jid the verdict on
-- its batch as batch_join() in lib_push.lua gives it (1 may join, 6 no such batch, 3 a callback
-- the batch may not push now), {dependency -> its index entry after the claims (false:
-- none)}]. The queues holding live dependencies are due in due:tallies before the dependants
-- are registered there (wf_register.lua): the ends they will send are tallies (lib_workflows.lua).
-- A jid whose entry names a live job (any queue, or earlier in
-- this call), or whose batch refuses it, is not claimed: push.lua refuses it; a free one (no
-- entry, or ~queue: a finished job's) now names this queue. The push gives back the claims of
-- the jobs it refuses (index_swap, lib_outbox.lua); a crash between the two steps leaves a
-- claim naming no job, which `hopper check --repair` drops. A batch's counts change only after
-- the push script (its tallies, lib_batches.lua), which the batches loop looks for in the
-- queue from ARGV[3] on.
local queue, n = ARGV[1], tonumber(ARGV[4])
local jids, batches = {unpack(ARGV, 5, 4 + n)}, {unpack(ARGV, 5 + n, 4 + 2 * n)}
local due = string.sub(KEYS[1], 1, -5) .. 'batches:due'
local before, verdicts = {}, {}
local owners = redis.call('HMGET', KEYS[1], unpack(jids))
for i, jid in ipairs(jids) do
  local owner = owners[i]
  local verdict = 1
  if batches[i] ~= '' then
    local bid, kind = string.match(batches[i], '^(%S+) ?(%a*)$')
    local s = batch_read(batch_record(due, bid))
    if not s then
      verdict = 6
    elseif kind ~= '' and batch_next(s) ~= kind then
      verdict = 3
    end
  end
  verdicts[i] = verdict
  if names_live(owner) or verdict ~= 1 then
    before[i] = owner
  else
    local now = redis.call('HGET', KEYS[1], jid)  -- claimed earlier in this call?
    if now == queue then
      before[i] = queue
    else
      before[i] = owner
      redis.call('HSET', KEYS[1], jid, queue)
    end
  end
end
local deps, found, told = {unpack(ARGV, 5 + 2 * n)}, {}, {[queue] = true}
local dep_owners = #deps > 0 and redis.call('HMGET', KEYS[1], unpack(deps)) or {}
for i, dep in ipairs(deps) do
  local owner = dep_owners[i]
  found[dep] = owner
  if names_live(owner) and not told[owner] then
    told[owner] = true
    AFTER.due_add(KEYS[4], ARGV[3], owner)
  end
end
redis.call('SADD', KEYS[2], queue)
if ARGV[2] ~= '' then AFTER.due_add(KEYS[3], ARGV[2], queue) end  -- with its touch count
if ARGV[3] ~= '' then AFTER.due_add(KEYS[4], ARGV[3], queue) end
return cjson.encode({before, verdicts, found})
