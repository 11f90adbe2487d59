-- claim: split mode's first step of a push (docs/cluster.md), on the global keys: claim each
-- jid for the queue in the jid index, list the queue, and add the queue's due entry for its
-- earliest scheduled job, all before the queue's push script (push.lua) runs.
-- KEYS: 1 jid index, 2 queues set, 3 due:scheduled
-- ARGV: 1 queue name, 2 the earliest time a job is scheduled for ('' = none), then the jids
-- Returns JSON: per jid, its index entry before the claim (false: none). A jid whose entry names
-- a live job (any queue, or earlier in this call) is not claimed: push.lua refuses it; a free
-- one (no entry, or ~queue: a finished job's) now names this queue. The push gives back the
-- claims of the jobs it refuses (index_swap, lib_outbox.lua); a crash between the two steps leaves a claim
-- naming no job, which `hopper check --repair` drops.
local queue, before = ARGV[1], {}
local owners = redis.call('HMGET', KEYS[1], unpack(ARGV, 3))
for i = 3, #ARGV do
  local owner = owners[i - 2]
  local jid = ARGV[i]
  if names_live(owner) then
    before[i - 2] = owner
  else
    local now = redis.call('HGET', KEYS[1], jid)  -- claimed earlier in this call?
    if now == queue then
      before[i - 2] = queue
    else
      before[i - 2] = owner
      redis.call('HSET', KEYS[1], jid, queue)
    end
  end
end
redis.call('SADD', KEYS[2], queue)
if ARGV[2] ~= '' then AFTER.due_add(KEYS[3], ARGV[2], queue) end  -- with its touch count
return cjson.encode(before)
