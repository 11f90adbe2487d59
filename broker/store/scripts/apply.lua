-- apply: split mode's second step, on the global keys: the writes a queue's script deferred
-- (its outbox, lib_outbox.lua), in the order it made them, in one atomic call.
-- KEYS: 1 the jid index (it routes the call to the global keys' slot)
-- ARGV: 1 what a visit read of due entries before the call (JSON {due key: [score, touched]}:
--       settle_due in lib.lua), or '' for no visit; then the outbox's entries
-- Returns {what the last entry returned (index_swap: 1 when it swapped, 0 for nothing), how
-- many batch callbacks and workflow ends came due}.
local result = apply_outbox(ARGV[1], {unpack(ARGV, 2)})
return {result, batch_due.n + wf_due.n}
