-- settle: split mode's workflow.lua (docs/cluster.md, Workflows): ends of dependencies marked
-- in wf:due, for dependants of one queue, each settled in the queue's slot (wf_end() in
-- lib_batches.lua). The store takes the entries from wf:due after this call, so an entry may
-- come twice: a dependant counts each dependency's end once (its `unmet` list).
-- KEYS: 1 the queue's jobs hash, 2 jid index, 3 awaited zset (as stand-ins)
-- ARGV: 1 now (unix seconds), 2 finished jobs kept per queue at most, 3 finished channel,
--       4 the dependants' index entries read before the call (read_global, lib_outbox.lua),
--       then the wf:due entries (JSON [outcome, queue, jid, dep, result])
-- Returns per entry 1 (settled, or nothing left to settle: the store drops it) or 0 (kept for
-- a later pass: its dependant is claimed in the index but not stored yet, a push on its way).
local queue = string.match(KEYS[1], '{(.*)}:jobs$')
begin_reads(ARGV[4])
local answers = {}
for i = 5, #ARGV do
  local e = cjson.decode(ARGV[i])
  local said = wf_end(KEYS[2], KEYS[3], ARGV[3], ARGV[2], e, ARGV[1])
  local coming = said == '' and redis.call('HEXISTS', KEYS[1], e[3]) == 0
    and read_global(i - 4) == queue
  answers[#answers + 1] = coming and 0 or 1
end
return answers
