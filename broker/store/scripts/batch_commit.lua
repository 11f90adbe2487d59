-- batch_commit: commit a batch (BATCH COMMIT), atomically.
-- KEYS: 1 its record, 2 batches:due zset, 3 batches:expiry zset
-- ARGV: 1 bid, 2 now (unix seconds), 3 when a committed batch that never finishes is purged
-- Returns -1 when the batch does not exist, else the number of callbacks that came due.
-- Guarantees: from this step on the batch may push its callbacks: one that may fire now
-- (every job ran, or none was pushed) is marked due in the same step (batch_look() in
-- lib_batches.lua). Committing again (after BATCH OPEN) is allowed and changes nothing else;
-- a batch already finished keeps its purge time.
local s = batch_read(KEYS[1])
if not s then return -1 end
redis.call('HSET', KEYS[1], 'committed', 1)
if not (s.told_c and s.told_s) then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) end
batch_look({due = KEYS[2], expiry = KEYS[3]}, ARGV[1], tonumber(ARGV[2]))
return batch_due.n
